//! The Lua scripts behind every write.
//!
//! Each script touches keys of a single hash slot only, so it runs unchanged
//! on Redis Cluster; the exceptions, [`REGENERATE_BOTH`] and the `*_indexed`
//! variants (which also update the owner's index, saving a round trip), are
//! used only against a standalone server. Scripts run atomically on the
//! server, which is what makes the compare-and-swap on `version` race-free.
//!
//! A record's fields travel as `ARGV[1..8]`, in the order of
//! [`crate::RedisStore`]'s record encoding: version, has-user flag, user,
//! data, created, last_active, expires_at, device. Script-specific arguments
//! follow at `ARGV[9]`.

use redis::Script;

/// Writes the record in `ARGV[1..8]` into the hash `key` and sets its native
/// expiry. Stale fields are overwritten; the owner field is removed for an
/// anonymous record so that a logout (owner → none) sticks.
const PUT: &str = r#"
local function put(key)
  redis.call('HSET', key, 'v', ARGV[1], 'd', ARGV[4], 'c', ARGV[5], 'a', ARGV[6], 'e', ARGV[7], 'dev', ARGV[8])
  if ARGV[2] == '1' then
    redis.call('HSET', key, 'u', ARGV[3])
  else
    redis.call('HDEL', key, 'u')
  end
  redis.call('PEXPIREAT', key, ARGV[7])
end
"#;

/// For the plain scripts: the caller maintains the owner's index itself.
const ANNOUNCE_NOTHING: &str = r#"
local function announce() end
"#;

/// For the `*_indexed` variants of [`CREATE`], [`SAVE`] and
/// [`REGENERATE_BOTH`] (standalone servers only, where one script may touch
/// both the session and the owner's index): the last key is the owner's
/// index and `ARGV[10]` the member (the new session key's hex). The member
/// is announced in the same atomic step as the write, with the logic of
/// [`INDEX_ADD`], which saves a round trip per write.
const ANNOUNCE_IN_INDEX: &str = r#"
local function announce()
  local index = KEYS[#KEYS]
  redis.call('ZADD', index, 'GT', ARGV[7], ARGV[10])
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', index, top[2]) end
end
"#;

/// `create`: `KEYS[1]` = session hash. Returns 1 if written, 0 if taken.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
announce()
put(KEYS[1])
return 1
"#;

/// `save`: `KEYS[1]` = session hash, `ARGV[9]` = expected version.
/// Returns `{status, previous owner}` with status 1 written, 0 conflict,
/// 2 missing. A missing hash is never recreated.
const SAVE: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
if not cur[1] then return {2, false} end
if cur[1] ~= ARGV[9] then return {0, false} end
announce()
put(KEYS[1])
return {1, cur[2]}
"#;

/// `regenerate` on standalone Redis: `KEYS[1]` = old hash, `KEYS[2]` = new
/// hash, `ARGV[9]` = expected version. Swaps both in one atomic step.
/// Returns `{status, previous owner}` as [`SAVE`] does.
const REGENERATE_BOTH: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
if not cur[1] then return {2, false} end
if cur[1] ~= ARGV[9] then return {0, false} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, false} end
redis.call('DEL', KEYS[1])
announce()
put(KEYS[2])
return {1, cur[2]}
"#;

/// Second half of `regenerate` on Redis Cluster: `KEYS[1]` = old hash,
/// `ARGV[1]` = expected version. Deletes the old hash if its version matches.
/// Returns `{status, previous owner}` as [`SAVE`] does.
const DELETE_IF_VERSION: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
if not cur[1] then return {2, false} end
if cur[1] ~= ARGV[1] then return {0, false} end
redis.call('DEL', KEYS[1])
return {1, cur[2]}
"#;

/// `touch`: `KEYS[1]` = session hash, `ARGV[1]` = last_active,
/// `ARGV[2]` = expires_at. Returns `{status, owner}` with status 0 missing,
/// 1 live but not moved (the stored activity is as recent), 2 moved.
/// Neither the version nor the data is touched.
const TOUCH: &str = r#"
local cur = redis.call('HMGET', KEYS[1], 'a', 'u')
if not cur[1] then return {0, false} end
if tonumber(ARGV[1]) > (tonumber(cur[1]) or -1) then
  redis.call('HSET', KEYS[1], 'a', ARGV[1], 'e', ARGV[2])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return {2, cur[2]}
end
return {1, cur[2]}
"#;

/// `destroy`: `KEYS[1]` = session hash. Returns `{deleted, owner}` so the
/// caller can drop the member from the owner's index.
const DESTROY: &str = r#"
local u = redis.call('HGET', KEYS[1], 'u')
local n = redis.call('DEL', KEYS[1])
return {n, u}
"#;

/// `destroy_for_user`: `KEYS[1]` = session hash, `ARGV[1]` = user. Deletes
/// only if the session still belongs to that user: an index member can lag
/// behind an owner change, and revoking one user's sessions must never kill
/// another user's.
const DESTROY_IF_OWNER: &str = r#"
if redis.call('HGET', KEYS[1], 'u') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Adds a member to a user index: `KEYS[1]` = index, `ARGV[1]` = session key
/// hex, `ARGV[2]` = expires_at. `GT` keeps the score at the latest expiry ever
/// announced, so a score is never below its session's real deadline and the
/// trimming in [`INDEX_LIST`] never drops a live session. The index key
/// itself expires with its longest-lived member.
const INDEX_ADD: &str = r#"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return 1
"#;

/// Trims members whose score (expiry) is before `ARGV[1]` (now, ms) from the
/// index `KEYS[1]` and returns the rest, soonest to expire first.
const INDEX_LIST: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#;

/// The compiled scripts; [`Script`] invokes by `EVALSHA` and falls back to
/// `SCRIPT LOAD` (sent to every node in cluster mode) on `NOSCRIPT`, so a
/// restarted, empty server is handled transparently.
pub(crate) struct Scripts {
    pub(crate) create: Script,
    pub(crate) save: Script,
    pub(crate) regenerate_both: Script,
    pub(crate) create_indexed: Script,
    pub(crate) save_indexed: Script,
    pub(crate) regenerate_both_indexed: Script,
    pub(crate) delete_if_version: Script,
    pub(crate) touch: Script,
    pub(crate) destroy: Script,
    pub(crate) destroy_if_owner: Script,
    pub(crate) index_add: Script,
    pub(crate) index_list: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        let with_put = |body: &str| Script::new(&format!("{PUT}{ANNOUNCE_NOTHING}{body}"));
        let with_put_and_index = |body: &str| Script::new(&format!("{PUT}{ANNOUNCE_IN_INDEX}{body}"));
        Scripts {
            create: with_put(CREATE),
            save: with_put(SAVE),
            regenerate_both: with_put(REGENERATE_BOTH),
            create_indexed: with_put_and_index(CREATE),
            save_indexed: with_put_and_index(SAVE),
            regenerate_both_indexed: with_put_and_index(REGENERATE_BOTH),
            delete_if_version: Script::new(DELETE_IF_VERSION),
            touch: Script::new(TOUCH),
            destroy: Script::new(DESTROY),
            destroy_if_owner: Script::new(DESTROY_IF_OWNER),
            index_add: Script::new(INDEX_ADD),
            index_list: Script::new(INDEX_LIST),
        }
    }
}
