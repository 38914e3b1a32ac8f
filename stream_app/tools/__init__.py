"""The tools around the service: recorded-log and catalogue readers, replay, the embedded broker and Redis,
worker processes, the topic reader, synthetic logs, demo and bench."""
