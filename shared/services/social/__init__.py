"""The social domain: ActivityPub's domain logic (following, publishing, collections, blocks,
processing what arrived in the inboxes, delivering what we publish)."""
