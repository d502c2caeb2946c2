"""The GitHub App service (`gatekeeper serve` / `worker`): the webhook, the durable store and
queue, run history, the dashboard and its sign-in, metrics, structured logs and settings. A
delivery becomes a Job in `service`.

An edge: may import the engine, github, and the shared root modules.
"""
