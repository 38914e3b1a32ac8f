"""stream-app: a streaming, real-time user-profile updater for recommender systems."""

__version__ = "0.1.0"
