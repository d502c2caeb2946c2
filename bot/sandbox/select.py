"""Which sandbox a run gets: the policy's `sandbox`, unless the command line says otherwise.

Kept apart from both sandboxes so that choosing one costs nothing: the containers sandbox
imports the docker SDK and testcontainers, which a local run never needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, cast

from bot.policy import LoadedPolicy
from bot.sandbox.base import Sandbox

Kind = Literal["local", "containers"]
KINDS: tuple[Kind, ...] = ("local", "containers")


def kind_of(loaded: LoadedPolicy, override: str | None = None) -> Kind:
    """`override` (from `--sandbox`) wins over the policy's `sandbox`."""
    if override is not None and override not in KINDS:
        raise ValueError(f"unknown sandbox '{override}': use {' or '.join(KINDS)}")
    return cast(Kind, override or loaded.policy.sandbox)


def factory(
    override: str | None = None, environ: Mapping[str, str] | None = None
) -> Callable[[LoadedPolicy], Sandbox]:
    """A sandbox factory for `bot.engine.pipeline.validate`."""

    def make(loaded: LoadedPolicy) -> Sandbox:
        policy = loaded.policy
        if kind_of(loaded, override) == "local":
            from bot.sandbox.local import for_policy

            return for_policy(loaded)
        from bot.sandbox.containers import ContainersSandbox

        return ContainersSandbox(
            policy.containers,
            database=policy.database.name,
            environ=environ,
            source=str(loaded.source),
            build_network=policy.build.network,
        )

    return make


def check_engine() -> None:
    """Raise EngineUnavailable (with the command that starts one) unless an engine answers.

    Entry points call it before anything else runs, so that a missing engine is one clear
    error at once rather than an error verdict after the merge and the build."""
    from bot.sandbox.images import connect

    connect().close()
