"""Clarion's load tool: drives any Pusher-protocol server over its public protocol only."""
