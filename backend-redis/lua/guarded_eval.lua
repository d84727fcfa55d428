-- Runs a caller's own Lua only while a lock hold is still the current grant (a guarded
-- script, GuardedScript::eval_if_held in src/guarded_script.rs).
-- KEYS[1]: the hold's entry key "p:e:<id>"; KEYS[2], ...: the caller's keys.
-- ARGV: channel prefix, the entry's expected value, the grant's fencing token (its
-- digits), then the caller's arguments.
-- The caller's body takes the place of the line "-- @body" below, as the function
-- guarded_body, whose KEYS and ARGV are tables of the caller's keys and arguments alone
-- (numbered from 1, as in a script of the caller's own). The hold's check (hold_current,
-- lib.lua) comes before the body in the text, so nothing a body holds can run before
-- it, and the body runs only while the hold is current.
-- Returns 0 when it is not (the body did not run), else a table of one item: the body's
-- reply (empty when the body returns nil, as a Lua table ends at its first nil).
if not hold_current(KEYS[1], ARGV[2], ARGV[3]) then
  return 0
end
local guarded_keys, guarded_argv = {}, {}
for i = 2, #KEYS do
  guarded_keys[i - 1] = KEYS[i]
end
for i = 4, #ARGV do
  guarded_argv[i - 3] = ARGV[i]
end
local function guarded_body(KEYS, ARGV)
-- @body
end
local reply = guarded_body(guarded_keys, guarded_argv)
return {reply}
