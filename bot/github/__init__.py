"""The GitHub edge: App authentication, a REST client that retries and paces itself, the
publisher that reports a Verdict on a pull request within GitHub's limits, and the mapping
of webhook payloads and Actions events to Jobs (`events`, `payload`, `pulls`).

The engine never imports this package; the service, Actions mode and the command line do.
It may import the engine and the app's metrics.
"""
