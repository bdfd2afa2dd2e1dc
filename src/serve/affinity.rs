//! Which worker answers a connection: the one kept to the CPU that received it.
//!
//! When there is a worker per CPU this process may use, worker *i* keeps to CPU *i* and its
//! listening socket takes the new connections that CPU receives (`SO_INCOMING_CPU` in a
//! `SO_REUSEPORT` group, Linux 6.2 and later): a connection's packets, its wakeups and its answers
//! stay on one CPU and its caches, instead of every request crossing to whichever worker the
//! kernel's hash picked.
//!
//! The kernel steers by CPU only, not by load: a NIC with one receive queue (many VMs) delivers
//! every connection on one CPU, and so does a client whose threads all connect from one CPU. So
//! each worker counts its open connections and, every [`TICK`], compares itself with the least
//! busy: one more than [`MAX_SKEW`] ahead at two ticks in a row hands half the difference over,
//! each connection at the end of its current request (between requests, nothing is in flight).
//! Two ticks, not one: a client's connections arrive in bursts (its threads one after the other),
//! and moving them at the first difference would undo the locality for a difference that evens
//! out within milliseconds.
//!
//! A connection also follows its client: once a tick, between two requests, it reads the CPU its
//! last request arrived on (`SO_INCOMING_CPU`, which the kernel updates with every packet) and
//! moves to that CPU's worker, unless that would put the worker more than [`MAX_SKEW`] ahead of
//! this one. Where the connection was made says where its client ran then; a client thread that
//! the scheduler has moved since (or several that connected from one CPU and spread out later)
//! would otherwise wait, for every answer, on a worker across CPUs.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::connections::SourceSlot;

/// How many open connections a worker may be ahead of the least busy one for as long as it likes.
pub const MAX_SKEW: usize = 8;

/// How often a worker compares its open connections with the others'.
pub const TICK: Duration = Duration::from_millis(100);

/// What the workers share: their CPUs, their open connections, the connections each is to hand
/// over, their ticks, and their inboxes.
struct Shared {
    /// The CPU each worker keeps to; empty when none does.
    cpus: Box<[usize]>,
    open: Box<[AtomicUsize]>,
    to_move: Box<[AtomicUsize]>,
    /// Each worker's ticks so far: a connection looks at where its packets arrive once a tick.
    ticks: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handed>]>,
}

/// One worker's place among the workers: the CPU it keeps to (if any) and the connections other
/// workers hand to it.
pub struct Lane {
    mover: Mover,
    inbox: mpsc::UnboundedReceiver<Handed>,
}

/// What a connection of one worker holds to be counted there and to be moved to another.
#[derive(Clone)]
pub struct Mover {
    shared: Arc<Shared>,
    index: usize,
}

/// A connection one worker hands to another: the socket (out of the first worker's reactor), its
/// source, whether it has answered a request already, and what holds its places in the counts.
pub struct Handed {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    pub kept_alive: bool,
    pub slot: SourceSlot,
    pub counted: Counted,
}

impl Lane {
    /// A lane for each worker; worker `i` keeps to `cpus[i]` when `cpus` is given (one per worker).
    pub fn all(workers: usize, cpus: Option<&[usize]>) -> Vec<Lane> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let zeros = || (0..workers).map(|_| AtomicUsize::new(0)).collect();
        let shared = Arc::new(Shared {
            cpus: cpus.filter(|cpus| cpus.len() == workers).unwrap_or_default().into(),
            open: zeros(),
            to_move: zeros(),
            ticks: zeros(),
            inboxes: inboxes.into(),
        });
        (receivers.into_iter().enumerate())
            .map(|(index, inbox)| Lane { mover: Mover { shared: shared.clone(), index }, inbox })
            .collect()
    }

    /// The CPU this worker keeps to, if any.
    pub fn cpu(&self) -> Option<usize> {
        self.mover.cpus()?.get(self.mover.index).copied()
    }

    /// What this worker's connections hold: their count, and the way to another worker.
    pub fn mover(&self) -> &Mover {
        &self.mover
    }

    /// The next connection another worker handed to this one (never ends while this lane lives:
    /// the workers' inboxes include its own).
    pub async fn handed(&mut self) -> Option<Handed> {
        self.inbox.recv().await
    }
}

/// For a worker with `mine` open connections against `least` for the least busy, ahead or not
/// (`ahead_before`) at the last tick: whether it is ahead now, and how many connections to hand
/// over (half the difference, once it has been ahead at two ticks in a row).
fn to_hand_over(ahead_before: bool, mine: usize, least: usize) -> (bool, usize) {
    let ahead = mine > least + MAX_SKEW;
    (ahead, if ahead && ahead_before { (mine - least) / 2 } else { 0 })
}

/// Whether a connection of a worker with `mine` open connections follows its client to a worker
/// with `theirs`: only if that leaves the other at most [`MAX_SKEW`] ahead of this one.
fn may_follow(mine: usize, theirs: usize) -> bool {
    // After the move: theirs + 1 <= (mine - 1) + MAX_SKEW.
    theirs + 2 <= mine + MAX_SKEW
}

impl Mover {
    /// The CPU of each worker in order, when each keeps to one.
    pub fn cpus(&self) -> Option<&[usize]> {
        (!self.shared.cpus.is_empty()).then_some(&*self.shared.cpus)
    }

    /// Counts a connection on this worker until the returned guard drops.
    pub fn count_here(&self) -> Counted {
        self.count(self.index)
    }

    /// Counts a connection on `worker` until the returned guard drops.
    fn count(&self, worker: usize) -> Counted {
        self.shared.open[worker].fetch_add(1, Ordering::Relaxed);
        Counted { shared: self.shared.clone(), index: worker }
    }

    /// Compares this worker with the least busy one every [`TICK`], forever, and sets how many of
    /// its connections to hand over (see the module's doc). Only for a worker kept to a CPU: the
    /// kernel's hash needs no help.
    pub async fn balance(self) {
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ahead_before = false;
        loop {
            ticks.tick().await;
            let (mine, least) = self.counts();
            let (ahead, to_move) = to_hand_over(ahead_before, mine, least);
            ahead_before = ahead;
            self.shared.to_move[self.index].store(to_move, Ordering::Relaxed);
            self.shared.ticks[self.index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every worker's open connections, as they change.
    pub fn open(&self) -> Open {
        Open(self.shared.clone())
    }

    /// This worker's open connections and the least busy worker's.
    fn counts(&self) -> (usize, usize) {
        let open = &self.shared.open;
        let least = open.iter().map(|n| n.load(Ordering::Relaxed)).min().unwrap_or(0);
        (open[self.index].load(Ordering::Relaxed), least)
    }

    /// Whether a tick has passed since `seen` (the tick a connection last looked at where its
    /// packets arrive, updated): a connection looks once a tick.
    pub fn ticked(&self, seen: &mut usize) -> bool {
        let tick = self.shared.ticks[self.index].load(Ordering::Relaxed);
        tick != std::mem::replace(seen, tick)
    }

    /// Whether a connection of this worker is to move now, and where, with its count there:
    ///
    /// - to the least busy worker while this one has connections to hand over (each asked takes
    ///   one);
    /// - else to the worker kept to `arrived_on`, the CPU its last request arrived on (looked at
    ///   once a tick, see [`Self::ticked`]), if [`may_follow`].
    ///
    /// Asked after every request: one load when nothing is to move.
    pub fn take_move(&self, arrived_on: Option<usize>) -> Option<(usize, Counted)> {
        let to_move = &self.shared.to_move[self.index];
        if to_move.load(Ordering::Relaxed) != 0
            && to_move.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
        {
            let open = &self.shared.open;
            let (least_busy, _) = (open.iter().enumerate())
                .filter(|&(i, _)| i != self.index)
                .min_by_key(|(_, n)| n.load(Ordering::Relaxed))?;
            return Some((least_busy, self.count(least_busy)));
        }
        let cpu = arrived_on?;
        let there = self.shared.cpus.iter().position(|&c| c == cpu).filter(|&w| w != self.index)?;
        let open = |w: usize| self.shared.open[w].load(Ordering::Relaxed);
        may_follow(open(self.index), open(there)).then(|| (there, self.count(there)))
    }

    /// Gives `handed` to `worker`; a worker that has stopped drops it (the connection closes).
    pub fn hand(&self, worker: usize, handed: Handed) {
        if let Some(inbox) = self.shared.inboxes.get(worker) {
            let _ = inbox.send(handed);
        }
    }
}

/// The open connections of every worker, read as they change (for tests and reports).
#[derive(Clone)]
pub struct Open(Arc<Shared>);

impl Open {
    /// Each worker's open connections, in order.
    pub fn now(&self) -> Vec<usize> {
        self.0.open.iter().map(|n| n.load(Ordering::Relaxed)).collect()
    }
}

/// An open connection, counted for its worker until dropped.
pub struct Counted {
    shared: Arc<Shared>,
    index: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.shared.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The CPUs this process may run on (its cpuset), in ascending order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU).filter(|&cpu| set.is_set(cpu)).collect())
}

/// Keeps the calling thread on `cpu`.
pub fn keep_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_worker_until_they_end() {
        let lanes = Lane::all(2, None);
        let a = lanes[0].mover().count_here();
        let b = lanes[0].mover().count_here();
        let c = lanes[1].mover().count_here();
        assert_eq!(lanes[0].mover().counts(), (2, 1));
        drop((a, c));
        assert_eq!(lanes[0].mover().counts(), (1, 0));
        drop(b);
        assert_eq!(lanes[0].mover().counts(), (0, 0));
    }

    #[test]
    fn a_worker_hands_over_half_the_difference_once_ahead_at_two_ticks() {
        assert_eq!(to_hand_over(false, MAX_SKEW, 0), (false, 0), "within the skew");
        assert_eq!(to_hand_over(false, 40, 0), (true, 0), "ahead once: a burst, perhaps");
        assert_eq!(to_hand_over(true, 40, 0), (true, 20), "ahead twice: half the difference");
        assert_eq!(to_hand_over(true, 40 + MAX_SKEW, 40), (false, 0), "the skew counts from the least busy");
        assert_eq!(to_hand_over(true, 0, 0), (false, 0));
    }

    /// Moves go to the least busy other worker, one per ask, as many as set; then none.
    #[test]
    fn each_connection_asked_moves_to_the_least_busy_until_the_count_is_taken() {
        let lanes = Lane::all(3, Some(&[0, 1, 2]));
        let mut held: Vec<Counted> = (0..30).map(|_| lanes[0].mover().count_here()).collect();
        let _busy: Vec<Counted> = (0..4).map(|_| lanes[1].mover().count_here()).collect();
        assert!(lanes[0].mover().take_move(None).is_none(), "nothing to hand over yet");
        lanes[0].mover.shared.to_move[0].store(13, Ordering::Relaxed);
        let mut moved = Vec::new();
        while let Some((worker, counted)) = lanes[0].mover().take_move(None) {
            moved.push((worker, counted));
        }
        assert_eq!(moved.len(), 13);
        let to = |w: usize| moved.iter().filter(|(worker, _)| *worker == w).count();
        assert_eq!((to(0), to(1), to(2)), (0, 5, 8), "the least busy first");
        let open = |w: usize| lanes[0].mover.shared.open[w].load(Ordering::Relaxed);
        held.truncate(17); // the moved connections' counts here end
        assert_eq!((open(0), open(1), open(2)), (17, 9, 8), "counted where they went");
    }

    #[test]
    fn a_connection_follows_its_client_unless_that_puts_the_other_worker_past_the_skew() {
        assert!(may_follow(1, 0));
        assert!(may_follow(20, 20 + MAX_SKEW - 2), "the other ends MAX_SKEW ahead");
        assert!(!may_follow(20, 20 + MAX_SKEW - 1), "the other would end past it");
    }

    /// Once a tick a connection looks where its packets arrive, and moves to that CPU's worker.
    #[test]
    fn a_connection_moves_to_the_worker_of_the_cpu_its_packets_arrive_on() {
        let lanes = Lane::all(2, Some(&[4, 6]));
        let mover = lanes[0].mover();
        let _here = mover.count_here();
        let mut seen = 0;
        assert!(!mover.ticked(&mut seen), "no tick yet");
        mover.shared.ticks[0].fetch_add(1, Ordering::Relaxed);
        assert!(mover.ticked(&mut seen) && !mover.ticked(&mut seen), "once a tick");
        assert!(mover.take_move(None).is_none(), "not looked");
        assert!(mover.take_move(Some(4)).is_none(), "its packets arrive on this worker's CPU");
        assert!(mover.take_move(Some(5)).is_none(), "a CPU no worker keeps to");
        let (worker, _counted) = mover.take_move(Some(6)).expect("moves");
        assert_eq!(
            (worker, lanes[1].mover().counts().0),
            (1, 1),
            "to the second CPU's worker, counted there"
        );
        let unpinned = Lane::all(2, None);
        assert!(unpinned[0].mover().take_move(Some(1)).is_none(), "no worker kept to a CPU: none follows");
    }
}
