"""The command line (`gatekeeper validate | demo | serve | worker | action | policy …`,
`main`) and the demo over the example targets (`demo`).

The outermost edge: may import every package.
"""
