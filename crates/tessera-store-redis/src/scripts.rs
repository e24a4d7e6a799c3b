//! The Lua scripts behind every write.
//!
//! Each script touches keys of a single hash slot only, so it runs unchanged
//! on Redis Cluster; the exceptions, [`REGENERATE_BOTH`] and the `*_indexed`
//! variants (which also update the owner's index, saving a round trip), are
//! used only against a standalone server. Scripts run atomically on the
//! server, which is what makes the compare-and-swap on `version` race-free.
//!
//! A record travels as `ARGV[1]`, the packed string exactly as it is stored
//! (see "Layout" in the crate docs), and `ARGV[2]`, its `expires_at` (for
//! `PEXPIREAT` and the index score), so the scripts never have to take the
//! new value apart. Script-specific arguments follow at `ARGV[3]`.
//!
//! Every script reads the current record through [`CURRENT`], which
//! understands both the packed string and the hash of the releases before
//! it, and every full write stores the packed string with `SET`, which
//! replaces a hash in the same atomic step: an old record is converted the
//! first time it is written.

use redis::Script;

/// `current(key)`: the record under `key` as the scripts need it, `nil` if
/// there is none. A packed string gives `{v, u, c, a, e, ul, dl, devl, s,
/// pos}` (header fields as strings; `u` the owner or `false`; `s` the whole
/// value and `pos` where its payload starts). A hash written by an older
/// release gives `{v, u, a, hash = true}`; as before, a hash without `v`
/// counts as absent. Anything unreadable (a string that is not a packed
/// record or whose payload length disagrees with its header, another type)
/// gives `{corrupt = true}`, which the writing scripts refuse with a
/// `CORRUPT` error and `destroy` still deletes. `pack(...)` builds a packed
/// value from its parts (`touch` uses it to convert a hash).
const CURRENT: &str = r#"
local HEADER = '^t1:(%d+):(%-?%d+):(%-?%d+):(%-?%d+):([%-%d]+):(%d+):(%d+):()'
local function current(key)
  local s = redis.pcall('GET', key)
  if type(s) == 'table' then
    local h = redis.pcall('HMGET', key, 'v', 'u', 'a')
    if h.err then return {corrupt = true} end
    if not h[1] then return nil end
    return {v = h[1], u = h[2], a = h[3], hash = true}
  end
  if not s then return nil end
  local v, c, a, e, ul, dl, devl, pos = string.match(s, HEADER)
  if not v then return {corrupt = true} end
  local u, n = false, 0
  if ul ~= '-' then
    n = tonumber(ul)
    if not n then return {corrupt = true} end
    u = string.sub(s, pos, pos + n - 1)
  end
  if #s - pos + 1 ~= n + tonumber(dl) + tonumber(devl) then return {corrupt = true} end
  return {v = v, u = u, c = c, a = a, e = e, ul = ul, dl = dl, devl = devl, s = s, pos = pos}
end
local function pack(v, c, a, e, u, d, dev)
  local ul = '-'
  if u then ul = #u else u = '' end
  return table.concat({'t1', v, c, a, e, ul, #d, #dev, u .. d .. dev}, ':')
end
local function corrupt()
  return redis.error_reply('CORRUPT the session record under this key is unreadable')
end
"#;

/// Writes the packed record `ARGV[1]` under `key` (replacing whatever is
/// there, a hash of an older release included) and sets its native expiry
/// `ARGV[2]`.
const PUT: &str = r#"
local function put(key)
  redis.call('SET', key, ARGV[1])
  redis.call('PEXPIREAT', key, ARGV[2])
end
"#;

/// For the plain scripts: the caller maintains the owner's index itself.
const ANNOUNCE_NOTHING: &str = r#"
local function announce() end
"#;

/// For the `*_indexed` variants of [`CREATE`], [`SAVE`] and
/// [`REGENERATE_BOTH`] (standalone servers only, where one script may touch
/// both the session and the owner's index): the last key is the owner's
/// index and `ARGV[4]` the member (the new session key's hex). The member
/// is announced in the same atomic step as the write, with the logic of
/// [`INDEX_ADD`], which saves a round trip per write.
const ANNOUNCE_IN_INDEX: &str = r#"
local function announce()
  local index = KEYS[#KEYS]
  redis.call('ZADD', index, 'GT', ARGV[2], ARGV[4])
  local top = redis.call('ZRANGE', index, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', index, top[2]) end
end
"#;

/// `create`: `KEYS[1]` = session key. Returns 1 if written, 0 if taken.
const CREATE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
announce()
put(KEYS[1])
return 1
"#;

/// `save`: `KEYS[1]` = session key, `ARGV[3]` = expected version.
/// Returns `{status, previous owner}` with status 1 written, 0 conflict,
/// 2 missing. A missing record is never recreated.
const SAVE: &str = r#"
local cur = current(KEYS[1])
if not cur then return {2, false} end
if cur.corrupt then return corrupt() end
if cur.v ~= ARGV[3] then return {0, false} end
announce()
put(KEYS[1])
return {1, cur.u}
"#;

/// `regenerate` on standalone Redis: `KEYS[1]` = old key, `KEYS[2]` = new
/// key, `ARGV[3]` = expected version. Swaps both in one atomic step.
/// Returns `{status, previous owner}` as [`SAVE`] does.
const REGENERATE_BOTH: &str = r#"
local cur = current(KEYS[1])
if not cur then return {2, false} end
if cur.corrupt then return corrupt() end
if cur.v ~= ARGV[3] then return {0, false} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {0, false} end
redis.call('DEL', KEYS[1])
announce()
put(KEYS[2])
return {1, cur.u}
"#;

/// Second half of `regenerate` on Redis Cluster: `KEYS[1]` = old key,
/// `ARGV[1]` = expected version. Deletes the old record if its version
/// matches. Returns `{status, previous owner}` as [`SAVE`] does.
const DELETE_IF_VERSION: &str = r#"
local cur = current(KEYS[1])
if not cur then return {2, false} end
if cur.corrupt then return corrupt() end
if cur.v ~= ARGV[1] then return {0, false} end
redis.call('DEL', KEYS[1])
return {1, cur.u}
"#;

/// `touch`: `KEYS[1]` = session key, `ARGV[1]` = last_active,
/// `ARGV[2]` = expires_at. Returns `{status, owner}` with status 0 missing,
/// 1 live but not moved (the stored activity is as recent), 2 moved.
/// Neither the version nor the data is touched: a packed record gets a new
/// header in front of the same payload; a hash of an older release is
/// converted to a packed record (or, if it lacks a field the packed form
/// needs, updated in place as before).
const TOUCH: &str = r#"
local cur = current(KEYS[1])
if not cur or (cur.hash and not cur.a) then return {0, false} end
if cur.corrupt then return corrupt() end
if tonumber(ARGV[1]) > (tonumber(cur.a) or -1) then
  if cur.hash then
    local h = redis.call('HMGET', KEYS[1], 'c', 'd', 'dev')
    if h[1] and h[2] then
      redis.call('SET', KEYS[1], pack(cur.v, h[1], ARGV[1], ARGV[2], cur.u, h[2], h[3] or ''))
    else
      redis.call('HSET', KEYS[1], 'a', ARGV[1], 'e', ARGV[2])
    end
  else
    local header = table.concat({'t1', cur.v, cur.c, ARGV[1], ARGV[2], cur.ul, cur.dl, cur.devl, ''}, ':')
    redis.call('SET', KEYS[1], header .. string.sub(cur.s, cur.pos))
  end
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
  return {2, cur.u}
end
return {1, cur.u}
"#;

/// `destroy`: `KEYS[1]` = session key. Returns `{deleted, owner}` so the
/// caller can drop the member from the owner's index. An unreadable record
/// is deleted too (its owner is unknown).
const DESTROY: &str = r#"
local cur = current(KEYS[1])
local u = false
if cur then u = cur.u or false end
local n = redis.call('DEL', KEYS[1])
return {n, u}
"#;

/// `destroy_for_user`: `KEYS[1]` = session key, `ARGV[1]` = user. Deletes
/// only if the session still belongs to that user: an index member can lag
/// behind an owner change, and revoking one user's sessions must never kill
/// another user's.
const DESTROY_IF_OWNER: &str = r#"
local cur = current(KEYS[1])
if cur and cur.u == ARGV[1] then
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
        let with_put = |body: &str| Script::new(&format!("{CURRENT}{PUT}{ANNOUNCE_NOTHING}{body}"));
        let with_put_and_index = |body: &str| Script::new(&format!("{CURRENT}{PUT}{ANNOUNCE_IN_INDEX}{body}"));
        let reading = |body: &str| Script::new(&format!("{CURRENT}{body}"));
        Scripts {
            create: with_put(CREATE),
            save: with_put(SAVE),
            regenerate_both: with_put(REGENERATE_BOTH),
            create_indexed: with_put_and_index(CREATE),
            save_indexed: with_put_and_index(SAVE),
            regenerate_both_indexed: with_put_and_index(REGENERATE_BOTH),
            delete_if_version: reading(DELETE_IF_VERSION),
            touch: reading(TOUCH),
            destroy: reading(DESTROY),
            destroy_if_owner: reading(DESTROY_IF_OWNER),
            index_add: Script::new(INDEX_ADD),
            index_list: Script::new(INDEX_LIST),
        }
    }
}
