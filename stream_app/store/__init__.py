"""The profile store: the Redis mirror of profiles and worker statuses."""
