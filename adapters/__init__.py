"""Pure translation between provider dialects: no IO, no clock, no logging."""
