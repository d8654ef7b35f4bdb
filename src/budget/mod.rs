//! The one rule for everything a peer or a client can make this node hold
//! (a stream slot, an upload's room, body bytes, an `/mcp` session, a tool
//! call): it is held only while it makes progress, and shared fairly.
//!
//! - **Progress** ([`Pace`]): the first frame (or byte) within
//!   [`Pace::first`], then at least [`Pace::min_bytes`] in every
//!   [`Pace::window`] until the end. A holder that falls behind is cut off
//!   and what it held is freed: an idle or trickling holder keeps nothing
//!   for longer than one window.
//! - **Fair shares** ([`Budget`]): a node-wide amount, of which one holder
//!   (a peer; a client's address for HTTP) may take at most
//!   [`Limits::per_holder`], and strangers together (peers neither trusted
//!   nor members; clients neither on loopback nor holding a key) at most
//!   [`Limits::strangers`], so that fresh keys or addresses cannot take what
//!   known peers need. Room is taken as it is used (bytes as they arrive),
//!   never by what a holder declares.
//!
//! Every refusal is counted in `atmosphere_budget_refusals_total{budget,
//! reason}` and what is held in `atmosphere_budget_held{budget}`. README
//! "Budgets" lists every budget with its numbers.

mod pace;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use libp2p::PeerId;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

pub use pace::{Metered, Pace, Paced, Progress};

use crate::metrics::Metrics;

/// Who holds a share of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Holder {
    /// A peer of the mesh, by its key.
    Peer(PeerId),
    /// An HTTP client, by its address (IPv6 by its /64: one host's share,
    /// however many addresses of its network it uses).
    Addr(IpAddr),
    /// An HTTP client whose address is not known (a request made in
    /// process, as tests do).
    Unknown,
}

impl Holder {
    /// The holder of a request from `ip`.
    pub fn addr(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Addr(IpAddr::V4(v4)),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    Self::Addr(IpAddr::V6(bits.into()))
                }
            },
            v4 => Self::Addr(v4),
        }
    }
}

/// Whether a holder is known to this node or a stranger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This node's own, a trusted peer (`mesh.trusted`), a member of a
    /// closed mesh, a client on loopback or with an API key.
    Known,
    /// Anyone else: fresh keys and addresses cost nothing to make.
    Stranger,
}

/// How much of a budget there is and how it is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// In all, at once.
    pub total: usize,
    /// For any one holder.
    pub per_holder: usize,
    /// For strangers together.
    pub strangers: usize,
}

impl Limits {
    /// `total` shared with `per_holder` for each holder and three quarters
    /// for strangers together (a quarter always left to known peers).
    pub fn shared(total: usize, per_holder: usize) -> Self {
        Self {
            total,
            per_holder: per_holder.min(total),
            strangers: (total - total / 4).max(1),
        }
    }
}

/// Why a budget had no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The holder has its share.
    Holder,
    /// Strangers together have theirs.
    Strangers,
    /// The node's whole budget is held.
    Node,
}

impl Refusal {
    /// The label in metrics and the word in error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Holder => "holder",
            Self::Strangers => "strangers",
            Self::Node => "node",
        }
    }
}

/// One budget of the node (stream slots, bytes of bodies, sessions...).
pub struct Budget {
    name: &'static str,
    limits: Limits,
    state: Mutex<State>,
    freed: Notify,
    metrics: Arc<Metrics>,
    /// `atmosphere_budget_held{budget=name}`, looked up once.
    held: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Default)]
struct State {
    used: usize,
    strangers: usize,
    /// Holders holding anything (none at zero: bounded by `total`).
    holders: HashMap<Holder, usize>,
}

fn gauge_value(used: usize) -> i64 {
    i64::try_from(used).unwrap_or(i64::MAX)
}

/// What one holder took of a budget; given back when dropped.
pub struct Hold {
    budget: Arc<Budget>,
    holder: Holder,
    standing: Standing,
    amount: usize,
}

impl Budget {
    /// A budget called `name` in metrics and logs.
    pub fn new(name: &'static str, limits: Limits, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            name,
            limits,
            state: Mutex::default(),
            freed: Notify::new(),
            held: metrics.budget_gauge(name),
            metrics,
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes `amount` for `holder` now, or says why not (counted).
    pub fn take(
        self: &Arc<Self>,
        holder: Holder,
        standing: Standing,
        amount: usize,
    ) -> Result<Hold, Refusal> {
        let mut hold = self.nothing(holder, standing);
        hold.grow(amount)?;
        Ok(hold)
    }

    /// A hold of nothing yet, for `holder`.
    fn nothing(self: &Arc<Self>, holder: Holder, standing: Standing) -> Hold {
        Hold {
            budget: self.clone(),
            holder,
            standing,
            amount: 0,
        }
    }

    /// Takes `amount` for `holder`, waiting until `deadline` for room
    /// (freed by others, or by the holder's own other requests).
    pub async fn take_by(
        self: &Arc<Self>,
        holder: Holder,
        standing: Standing,
        amount: usize,
        deadline: Instant,
    ) -> Result<Hold, Refusal> {
        let mut hold = self.nothing(holder, standing);
        hold.grow_by(amount, deadline).await?;
        Ok(hold)
    }

    /// How much is held, in all and by `holder`.
    pub fn held(&self, holder: Option<&Holder>) -> usize {
        let state = self.state.lock();
        match holder {
            None => state.used,
            Some(h) => state.holders.get(h).copied().unwrap_or(0),
        }
    }

    /// Why `amount` more for `holder` would not fit now, if it would not.
    fn refusal(
        &self,
        state: &State,
        holder: Holder,
        standing: Standing,
        amount: usize,
    ) -> Option<Refusal> {
        let mine = state.holders.get(&holder).copied().unwrap_or(0);
        if mine.saturating_add(amount) > self.limits.per_holder {
            Some(Refusal::Holder)
        } else if standing == Standing::Stranger
            && state.strangers.saturating_add(amount) > self.limits.strangers
        {
            Some(Refusal::Strangers)
        } else if state.used.saturating_add(amount) > self.limits.total {
            Some(Refusal::Node)
        } else {
            None
        }
    }

    /// Whether `amount` more for `holder` would fit now, taking nothing (an
    /// upload's head is judged by it before its body travels).
    pub fn fits(&self, holder: Holder, standing: Standing, amount: usize) -> Result<(), Refusal> {
        match self.refusal(&self.state.lock(), holder, standing, amount) {
            Some(refusal) => {
                self.metrics.budget_refusal(self.name, refusal.as_str());
                Err(refusal)
            }
            None => Ok(()),
        }
    }

    fn try_add(&self, holder: Holder, standing: Standing, amount: usize) -> Result<(), Refusal> {
        let mut state = self.state.lock();
        if let Some(refusal) = self.refusal(&state, holder, standing, amount) {
            drop(state);
            self.metrics.budget_refusal(self.name, refusal.as_str());
            tracing::debug!(
                budget = self.name,
                ?holder,
                reason = refusal.as_str(),
                "budget refused"
            );
            return Err(refusal);
        }
        state.used += amount;
        if standing == Standing::Stranger {
            state.strangers += amount;
        }
        *state.holders.entry(holder).or_default() += amount;
        self.held.set(gauge_value(state.used));
        Ok(())
    }

    fn give_back(&self, holder: Holder, standing: Standing, amount: usize) {
        if amount == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.used -= amount;
        if standing == Standing::Stranger {
            state.strangers -= amount;
        }
        if let Some(n) = state.holders.get_mut(&holder) {
            *n -= amount;
            if *n == 0 {
                state.holders.remove(&holder);
            }
        }
        self.held.set(gauge_value(state.used));
        drop(state);
        self.freed.notify_waiters();
    }
}

impl Hold {
    /// How much this hold has.
    pub fn amount(&self) -> usize {
        self.amount
    }

    /// Takes `more` now, or says why not (the hold keeps what it had).
    pub fn grow(&mut self, more: usize) -> Result<(), Refusal> {
        self.budget.try_add(self.holder, self.standing, more)?;
        self.amount += more;
        Ok(())
    }

    /// Takes `more`, waiting until `deadline` for room that others hold.
    pub async fn grow_by(&mut self, more: usize, deadline: Instant) -> Result<(), Refusal> {
        // Room is there nearly always: no waiter is set up for that.
        if self.grow(more).is_ok() {
            return Ok(());
        }
        let budget = self.budget.clone();
        loop {
            let freed = budget.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.grow(more) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    if tokio::time::timeout_at(deadline, freed).await.is_err() {
                        return Err(refusal);
                    }
                }
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.budget
            .give_back(self.holder, self.standing, self.amount);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    pub(super) fn budget(limits: Limits) -> Arc<Budget> {
        Budget::new("test", limits, Arc::new(Metrics::default()))
    }

    #[test]
    fn one_holder_takes_its_share_and_no_more() {
        let b = budget(Limits::shared(100, 30));
        let a = Holder::Peer(PeerId::random());
        let held = b.take(a, Standing::Known, 30).expect("its share");
        assert_eq!(b.take(a, Standing::Known, 1).err(), Some(Refusal::Holder));
        let other = Holder::Peer(PeerId::random());
        assert!(
            b.take(other, Standing::Known, 30).is_ok(),
            "others are not held back"
        );
        drop(held);
        assert!(
            b.take(a, Standing::Known, 30).is_ok(),
            "given back when dropped"
        );
    }

    #[test]
    fn strangers_together_leave_known_peers_their_quarter() {
        let b = budget(Limits::shared(100, 10));
        let mut strangers = Vec::new();
        let refused = loop {
            match b.take(Holder::Peer(PeerId::random()), Standing::Stranger, 10) {
                Ok(h) => strangers.push(h),
                Err(r) => break r,
            }
        };
        assert_eq!(refused, Refusal::Strangers);
        assert_eq!(b.held(None), 70, "75 for strangers, taken 10 at a time");
        let known: Vec<_> = (0..3)
            .map(|_| b.take(Holder::Peer(PeerId::random()), Standing::Known, 10))
            .collect();
        assert!(
            known.iter().all(Result::is_ok),
            "known peers still find room"
        );
        assert_eq!(
            b.take(Holder::Peer(PeerId::random()), Standing::Known, 10)
                .err(),
            Some(Refusal::Node)
        );
    }

    #[test]
    fn a_hold_grows_as_its_bytes_arrive_and_the_holders_are_forgotten() {
        let b = budget(Limits::shared(100, 50));
        let a = Holder::addr("2001:db8::1".parse().expect("v6"));
        let same_host = Holder::addr("2001:db8::2".parse().expect("v6"));
        assert_eq!(a, same_host, "one /64, one holder");
        let mut h = b.take(a, Standing::Stranger, 0).expect("nothing yet");
        for _ in 0..5 {
            h.grow(10).expect("room");
        }
        assert_eq!(h.grow(1), Err(Refusal::Holder));
        assert_eq!(h.amount(), 50);
        drop(h);
        assert_eq!(b.held(None), 0);
        assert!(b.state.lock().holders.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_taker_gets_room_freed_by_others() {
        let b = budget(Limits {
            total: 10,
            per_holder: 10,
            strangers: 10,
        });
        let first = b.take(Holder::Unknown, Standing::Known, 10).expect("all");
        let b2 = b.clone();
        let waiter = tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            b2.take_by(Holder::Peer(PeerId::random()), Standing::Known, 5, deadline)
                .await
                .map(|h| h.amount())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(first);
        assert_eq!(waiter.await.expect("task"), Ok(5));

        let b = budget(Limits::shared(10, 5));
        let _mine = b
            .take(Holder::Unknown, Standing::Known, 5)
            .expect("its share");
        let deadline = Instant::now() + Duration::from_millis(100);
        assert_eq!(
            b.take_by(Holder::Unknown, Standing::Known, 1, deadline)
                .await
                .err(),
            Some(Refusal::Holder),
            "over its own share until the deadline"
        );
    }
}
