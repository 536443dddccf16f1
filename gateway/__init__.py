"""The aiohttp gateway: ingress, the admin API, the web channel and the channel adapters.

Filled in by the gateway issue; see DESIGN.md, "The shape".
"""
