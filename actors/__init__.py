"""Conversation actors on Ray: the conversation, its host, and the supervisors.

Filled in by the actors issue; see DESIGN.md, "The shape".
"""
