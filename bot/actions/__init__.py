"""Actions mode: `gatekeeper validate --github-event` inside a GitHub Actions job reads the
event, validates and reports through the step's outputs, summary and annotations.

- `run`: the step, event file in and exit code out (`run_step`), the token taken out of the
  environment before anything runs;
- `event`: the event file read and resolved to what to validate, a Target and its base commit;
- `dispatch`: what a `workflow_dispatch`'s inputs ask for;
- `outputs`: `$GITHUB_OUTPUT`, the step summary and workflow-command annotations;
- `errors`: `ActionsError`, a step that cannot start (exit 2).

An edge: may import the engine and github.
"""
