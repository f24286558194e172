"""Shared by agent and collector: the sample type, its line-protocol codec, config."""
