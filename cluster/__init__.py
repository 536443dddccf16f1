"""Starting or joining Ray, placing hosts across nodes, scaling and rebalancing.

Filled in by the actors issue; see DESIGN.md, "The shape".
"""
