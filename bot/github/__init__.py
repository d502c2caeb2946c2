"""The GitHub edge: App authentication, a REST client that retries and paces itself, and the
publisher that reports a Verdict on a pull request within GitHub's limits.

The engine never imports this package; the service and the command line do.
"""
