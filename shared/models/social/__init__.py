"""The social domain's models (ActivityPub): actors and keys, what arrives (inbox, followers,
follows, reactions, blocks) and what we publish (objects, activities, deliveries)."""
