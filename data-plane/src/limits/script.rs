//! Lua scripts run with EVALSHA (loaded on NOSCRIPT), each command built in one buffer: counter
//! key names are written into it piece by piece instead of being formatted into Strings first,
//! so a request costs one allocation for its command and one round trip.

use std::io::Write;
use std::sync::Arc;

use redis::{Cmd, FromRedisValue, RedisWrite, Script};

use super::Unanswered;
use crate::redis_link::{CALL_TIMEOUT, Conn, RedisLink};

pub(super) struct LuaScript(Script);

impl LuaScript {
    pub(super) fn new(code: &str) -> Self {
        Self(Script::new(code))
    }

    /// `EVALSHA <sha> <keys>`, for the caller to append the keys and then the arguments.
    /// `room`: bytes the keys and arguments need, so the buffer is allocated once.
    pub(super) fn command(&self, keys: usize, args: usize, room: usize) -> Cmd {
        let hash = self.0.get_hash();
        let mut cmd = Cmd::with_capacity(3 + keys + args, 7 + hash.len() + 4 + room);
        cmd.arg("EVALSHA").arg(hash).arg(keys);
        cmd
    }

    /// Runs `cmd` (from [`Self::command`]) within the Redis deadline.
    pub(super) async fn run<T: FromRedisValue>(
        &self,
        link: &Arc<RedisLink>,
        mut conn: Conn,
        cmd: &Cmd,
    ) -> Result<T, Unanswered> {
        let call = async {
            let mut first = cmd.query_async(&mut conn).await;
            // A cluster's MOVED or TRYAGAIN means the command did not run: sending it once more
            // (to the node the client now knows) cannot count twice.
            if let Err(e) = &first
                && matches!(
                    e.kind(),
                    redis::ErrorKind::Moved | redis::ErrorKind::TryAgain
                )
            {
                first = cmd.query_async(&mut conn).await;
            }
            match first {
                // A restarted or flushed Redis has forgotten the script.
                Err(e) if e.kind() == redis::ErrorKind::NoScriptError => {
                    self.0.load_async(&mut conn).await?;
                    cmd.query_async(&mut conn).await
                }
                answer => answer,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(Unanswered::Failed(link.clone(), e)),
            Err(_) => Err(Unanswered::TimedOut(link.clone())),
        }
    }
}

/// The region's Redis link and a connection to it, if there is one.
pub(super) fn connect(
    redis: Option<&Arc<RedisLink>>,
) -> Result<(&Arc<RedisLink>, Conn), Unanswered> {
    let link = redis.ok_or(Unanswered::NoLink)?;
    let conn = link.conn().ok_or_else(|| Unanswered::Down(link.clone()))?;
    Ok((link, conn))
}

/// Appends the key `<prefix><kind><scope>` to `cmd`; on a Redis Cluster `<prefix><kind>{<scope>}`,
/// so that every key of one scope (its rate counter and its quota) is in the same hash slot, as
/// a script's keys must be.
pub(super) fn key(cmd: &mut Cmd, link: &RedisLink, kind: &str, scope: &str) {
    let tag = link.is_cluster();
    let mut arg = cmd.writer_for_next_arg();
    // Writes into the command's own Vec, which cannot fail.
    let _ = arg
        .write_all(link.prefix().as_bytes())
        .and_then(|()| arg.write_all(kind.as_bytes()))
        .and_then(|()| if tag { arg.write_all(b"{") } else { Ok(()) })
        .and_then(|()| arg.write_all(scope.as_bytes()))
        .and_then(|()| if tag { arg.write_all(b"}") } else { Ok(()) });
}

/// Bytes [`key`] writes, for [`LuaScript::command`]'s `room`.
pub(super) fn key_len(link: &RedisLink, kind: &str, scope: &str) -> usize {
    link.prefix().len() + kind.len() + scope.len() + if link.is_cluster() { 2 } else { 0 }
}

/// Room for one numeric argument, sign and digits.
pub(super) const NUMBER_LEN: usize = 20;
