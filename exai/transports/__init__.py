"""Transports: they only move messages between clients and sessions (`exai.session`)."""
