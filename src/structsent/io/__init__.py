"""Streaming readers and writers for the formats `structsent label` handles, and the resume manifest."""
