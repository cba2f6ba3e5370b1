-- Prepended to every queue script after _lib.lua: KEYS are the nine keys of one queue,
-- ARGV[1] the prefix of its job hashes, ARGV[2] the store's wake-up channel, ARGV[3] its name.
bind_queue(1, ARGV[1], ARGV[2], ARGV[3])
