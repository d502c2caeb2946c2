"""Where the change's code runs: PostgreSQL and the API under test as processes or
containers, the constructed environment, the per-run account and namespaces (`confine`,
`netns`), the change's shell commands (`shell`) and the build cache (`buildcache`).

May import: policy.
"""

from bot.sandbox.base import (
    ApiSpec,
    ApiStartError,
    DatabaseStartError,
    Sandbox,
    SandboxError,
)

__all__ = ["ApiSpec", "ApiStartError", "DatabaseStartError", "Sandbox", "SandboxError"]
