"""The client SDK: what runs on the user's machine, trusted by that user alone."""
