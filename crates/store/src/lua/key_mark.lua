-- Records the newest result delivered at one object key, unless a newer one is recorded
-- (lib/key_mark.lua does the work).
-- KEYS[1]: the marker, "<completedAt ms> <delivery id>"
-- ARGV[1]: completedAt of this result (ms)
-- ARGV[2]: its delivery id
-- ARGV[3]: how long the marker is kept (s)
-- Returns: 1 if the marker now names this result, 0 if a newer one was kept.
return key_mark(KEYS, ARGV)
