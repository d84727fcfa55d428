-- Counts the live entries of a waiter line (holders and waiters); read-only.
-- ARGV: channel prefix (unused), p. See fq_live in lib.lua.
return fq_live(ARGV[2])
