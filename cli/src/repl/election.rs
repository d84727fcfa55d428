//! The election demo: `elect [VALUE]`, `proclaim [VALUE]`, `resign`, `watch`, `query`,
//! `rev`.
//!
//! As in etcd's Go demo, `elect` campaigns in the background (`campaigning …` at once,
//! `elected …` once won) and `watch` prints every leader change from then on, while the
//! other commands answer before the next line is read.

use std::sync::Arc;

use distsync::election::LeaderInfo;
use distsync::{Bytes, Election, Leadership, Name, Session};
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::{blocking, next_input, release_quietly, report, split, unknown, Input};
use crate::context::Ctx;
use crate::exit::{self, Failure};
use crate::output::{say, text};
use crate::stdin::Lines;

struct Demo {
    election: Arc<dyn Election>,
    /// This node's id, for the default values `value-<id>-<count>`.
    id: u64,
    /// How many default values were made, as the Go demo counts.
    count: u64,
    leadership: Option<Leadership>,
    campaign: Option<JoinHandle<distsync::Result<Leadership>>>,
    /// The value of the campaign under way (or last won).
    campaign_value: String,
    watch: Option<JoinHandle<()>>,
}

/// The election demo on the election `name`.
///
/// # Errors
/// Exit code 3 when the session is lost.
pub(super) async fn run(
    ctx: &mut Ctx,
    session: &Session,
    lines: &mut Lines,
    name: Name,
    id: u64,
) -> Result<u8, Failure> {
    let election: Arc<dyn Election> = Arc::from(ctx.coordinator.backend().election(session, name)?);
    let mut demo = Demo {
        election,
        id,
        count: 0,
        leadership: None,
        campaign: None,
        campaign_value: String::new(),
        watch: None,
    };
    let end = loop {
        let input = tokio::select! {
            input = next_input(lines, &mut ctx.interrupts, Some(session)) => input,
            joined = finished(&mut demo.campaign) => {
                demo.campaign = None;
                match joined {
                    Ok(Ok(leadership)) => {
                        say!(
                            "elected value={} term={} key={}",
                            demo.campaign_value,
                            leadership.term(),
                            leadership.key()
                        );
                        demo.leadership = Some(leadership);
                    }
                    Ok(Err(error)) => {
                        if let Err(end) = report("elect", error) {
                            break end;
                        }
                    }
                    Err(error) => say!("error: elect: {error}"),
                }
                continue;
            }
            () = lost(demo.leadership.as_ref()) => {
                demo.leadership = None;
                say!("leadership lost");
                continue;
            }
        };
        let Input::Line(line) = input else {
            break input;
        };
        if let Err(end) = demo.handle(ctx, session, &line).await {
            break end;
        }
    };
    demo.stop().await;
    end.exit().unwrap_or(Ok(exit::OK))
}

impl Demo {
    async fn handle(&mut self, ctx: &mut Ctx, session: &Session, line: &str) -> Result<(), Input> {
        match split(line) {
            ("elect", value) => self.elect(value),
            ("proclaim", value) => {
                let value = self.value_or_default(value);
                match &self.leadership {
                    None => say!("error: proclaim: not leader"),
                    Some(leadership) => {
                        let proclaimed = leadership.proclaim(Bytes::from(value.clone()));
                        match blocking(proclaimed, &mut ctx.interrupts, Some(session)).await? {
                            Ok(()) => say!("proclaimed value={value}"),
                            Err(error) => report("proclaim", error)?,
                        }
                    }
                }
            }
            ("resign", "") => self.resign().await?,
            ("watch", "") => self.watch(),
            ("query", "") => {
                match blocking(self.election.leader(), &mut ctx.interrupts, Some(session)).await? {
                    Ok(Some(leader)) => say!("current leader {}", describe(&leader)),
                    Ok(None) => say!("no leader"),
                    Err(error) => report("query", error)?,
                }
            }
            ("rev", "") => {
                // As Go's `Election.Rev`: the term this node won, 0 when it leads not.
                let rev = self.leadership.as_ref().map_or(0, |l| l.term().get());
                say!("current rev={rev}");
            }
            ("help", _) => {
                say!("commands: elect [VALUE], proclaim [VALUE], resign, watch, query, rev, quit")
            }
            _ => unknown(line),
        }
        Ok(())
    }

    /// `value` if given, else `value-<id>-<count>` as the Go demo makes them.
    fn value_or_default(&mut self, value: &str) -> String {
        if !value.is_empty() {
            return value.to_owned();
        }
        let value = format!("value-{}-{}", self.id, self.count);
        self.count += 1;
        value
    }

    fn elect(&mut self, value: &str) {
        if self.leadership.is_some() {
            say!("error: elect: already leader");
            return;
        }
        if self.campaign.is_some() {
            say!("error: elect: already campaigning");
            return;
        }
        let value = self.value_or_default(value);
        say!("campaigning value={value}");
        self.campaign_value.clone_from(&value);
        let election = Arc::clone(&self.election);
        self.campaign = Some(tokio::spawn(async move { election.campaign(value).await }));
    }

    async fn resign(&mut self) -> Result<(), Input> {
        if let Some(campaign) = self.campaign.take() {
            if let Some(leadership) = withdraw(campaign).await {
                self.leadership = Some(leadership);
            } else {
                say!("campaign cancelled");
                return Ok(());
            }
        }
        match self.leadership.take() {
            None => say!("error: resign: not leader"),
            Some(leadership) => match leadership.resign().await {
                Ok(()) => say!("resigned"),
                Err(error) => report("resign", error)?,
            },
        }
        Ok(())
    }

    fn watch(&mut self) {
        if self.watch.is_some() {
            say!("error: watch: already watching");
            return;
        }
        let mut leaders = self.election.observe();
        say!("watching");
        self.watch = Some(tokio::spawn(async move {
            while let Some(next) = leaders.next().await {
                match next {
                    Ok(leader) => say!("leader changed {}", describe(&leader)),
                    Err(error) => {
                        say!("error: watch: {error}");
                        return;
                    }
                }
            }
        }));
    }

    /// Stops watching, withdraws a campaign and resigns: the session ends next.
    async fn stop(mut self) {
        if let Some(watch) = self.watch.take() {
            watch.abort();
        }
        if let Some(campaign) = self.campaign.take() {
            self.leadership = self.leadership.take().or(withdraw(campaign).await);
        }
        if let Some(leadership) = self.leadership.take() {
            release_quietly("leadership", leadership.resign()).await;
        }
    }
}

/// Cancels a background campaign; returns the leadership if it was won meanwhile.
async fn withdraw(campaign: JoinHandle<distsync::Result<Leadership>>) -> Option<Leadership> {
    campaign.abort();
    match campaign.await {
        Ok(Ok(leadership)) => Some(leadership),
        _ => None,
    }
}

/// Resolves when a background campaign finishes; never without one. Cancel-safe.
async fn finished(
    campaign: &mut Option<JoinHandle<distsync::Result<Leadership>>>,
) -> Result<distsync::Result<Leadership>, tokio::task::JoinError> {
    match campaign {
        Some(campaign) => campaign.await,
        None => std::future::pending().await,
    }
}

async fn lost(leadership: Option<&Leadership>) {
    match leadership {
        Some(leadership) => leadership.lost().await,
        None => std::future::pending().await,
    }
}

fn describe(leader: &LeaderInfo) -> String {
    format!(
        "value={} term={} key={}",
        text(&leader.value),
        leader.term,
        leader.key
    )
}
