"""Device pollers: one task per device reads it on its interval and turns answers into records."""
