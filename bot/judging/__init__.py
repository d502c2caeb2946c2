"""From observations to a decision: the migration linter (`lint`), the risk rating (`risk`),
the derived rollback (`rollback`), the policy's decision rules (`decision`) and the Verdict
every edge reports (`verdict`).

May import: observing, policy.
"""
