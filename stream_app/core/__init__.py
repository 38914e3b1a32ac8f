"""The pure core: (profile, event) -> (profile', recommendation), item state, event-time order and the
online learners. No Faust, Kafka, Redis, deep-learning framework or tool: workers and `evaluate` run the same code."""
