//! Sessions shared with peer directors (connection sync): the records a
//! worker keeps of its own sessions for the dataplane to send
//! ([`Worker::emit`], [`Worker::take_sync`]), and the peers' records it
//! installs ([`Worker::install`]) so that it carries their connections on
//! when the traffic comes to it.

use crate::service::{ServiceKey, ServiceSpec};
use crate::session::{self, flags, FlowKey, Session, SessionId, State};
use crate::sync::SessionRecord;
use crate::types::{ForwardMode, Protocol, NIL};

use super::{Counter, Worker};

/// Table slots a resync reads per step: a short pause of the worker's loop
/// even in a large table.
pub const RESYNC_SLOTS: u32 = 16_384;

impl Worker {
    /// Keeps a record of session `id` for the peers (with `sync`).
    pub(super) fn emit(&mut self, id: SessionId) {
        let state = self.sessions.get(id).state as u8;
        self.emit_as(id, state);
    }

    /// Keeps a record for the peers that session `id`, about to be closed
    /// before its time, is gone: their copy goes too (a copy left would
    /// keep a reused tuple on the old server and local port).
    pub(super) fn emit_removal(&mut self, id: SessionId) {
        self.emit_as(id, State::None as u8);
    }

    fn emit_as(&mut self, id: SessionId, state: u8) {
        if !self.cfg.sync {
            return;
        }
        if self.sync_out.len() == self.sync_out.capacity() {
            self.count(Counter::SyncOutboxFull);
            return;
        }
        let s = self.sessions.get(id);
        let Some(svc) = self
            .dests
            .dests
            .get(s.dest as usize)
            .and_then(|d| self.dests.svcs.get(d.svc as usize))
        else {
            return;
        };
        let record = SessionRecord {
            proto: s.proto,
            mode: s.mode,
            state,
            client: (s.client, s.cport),
            vip: (s.vip, s.vport),
            rs: (s.rs, s.rport),
            laddr: (s.laddr, s.lport),
            mark: svc.key.mark,
            service_port: svc.key.port,
        };
        self.sync_out.push(record);
    }

    /// Starts telling the peers of every session this worker holds (a peer
    /// started and knows none): [`resync_step`](Self::resync_step) goes on
    /// with it between bursts.
    pub fn resync(&mut self) {
        if self.cfg.sync {
            self.resync_at = 0;
        }
    }

    /// Goes on with a resync: reads up to [`RESYNC_SLOTS`] slots of the
    /// table, keeping records while the outbox has room.
    pub fn resync_step(&mut self) {
        if self.resync_at == NIL {
            return;
        }
        let end = self
            .resync_at
            .saturating_add(RESYNC_SLOTS)
            .min(self.sessions.slots());
        let mut at = self.resync_at;
        while at < end && self.sync_out.len() < self.sync_out.capacity() {
            if self.sessions.get_used(at).is_some() {
                self.emit(at);
            }
            at += 1;
        }
        self.resync_at = if at >= self.sessions.slots() { NIL } else { at };
    }

    /// The records kept for the peers since the last call.
    pub fn take_sync(&mut self) -> std::vec::Drain<'_, SessionRecord> {
        self.sync_out.drain(..)
    }

    /// A peer's session: installed if new, its state and deadline brought
    /// up to date if this worker has it. Runs between bursts. Refused when
    /// this director has no such service and real server, when a Full-NAT
    /// port is not this worker's, and when the table is 90% full (the rest
    /// stays for this director's own connections).
    pub fn install(&mut self, r: &SessionRecord, now: u32) -> Result<(), Counter> {
        let refuse = |w: &mut Worker, c: Counter| {
            w.count(c);
            Err(c)
        };
        if r.state == State::Template as u8 {
            return self.install_template(r, now);
        }
        if r.state == State::None as u8 {
            self.remove_synced(r);
            return Ok(());
        }
        let Some(state) = State::of_connection(r.state) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let Some(key) = service_key(r) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let expires = now.wrapping_add(state.timeout(&self.snap.timeouts));
        let in_key = inbound_key(r);
        if let Some(id) = self.sessions.lookup_in(&in_key) {
            let s = self.sessions.get_mut(id);
            if !s.is_template() {
                s.state = state;
                s.expires = expires;
                self.count(Counter::SyncUpdated);
                return Ok(());
            }
        }
        let Some(si) = self.snap.find(&key) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let h = self.svc_of_snap[si as usize];
        let Some(i) = real_of(&self.snap.services[si as usize].spec, r) else {
            return refuse(self, Counter::SyncUnknown);
        };
        if u64::from(self.sessions.len()) * 10 >= u64::from(self.sessions.capacity()) * 9 {
            return refuse(self, Counter::SyncTableFull);
        }
        let dest = self.dests.svcs[h as usize].dests[i];
        if self.dests.dests[dest as usize].mode != r.mode {
            return refuse(self, Counter::SyncUnknown);
        }
        if r.mode == ForwardMode::Fnat {
            let laddr_id = self
                .lports
                .as_mut()
                .and_then(|u| u.reserve(&r.laddr.0, r.laddr.1));
            let pool = self.dests.svcs[h as usize].pool.as_mut();
            let reserved = match (laddr_id, pool) {
                (Some(id), Some(pool)) => pool.reserve(id),
                _ => false,
            };
            if !reserved {
                // Not this worker's port, or not this service's local
                // address: give back what was taken.
                if let (Some(_), Some(u)) = (laddr_id, self.lports.as_mut()) {
                    u.release(&r.laddr.0, r.laddr.1);
                }
                return refuse(self, Counter::SyncUnknown);
            }
        }
        let mut s = Session::new(r.proto, r.client, r.vip, r.rs, r.laddr, r.mode, state);
        s.dest = dest;
        s.set_template(NIL);
        let inactive = !state.is_active();
        if !inactive {
            s.flags &= !flags::INACTIVE;
        }
        let id = match self.sessions.insert(s, expires) {
            Ok(id) => id,
            Err(_) => {
                if r.mode == ForwardMode::Fnat {
                    let released = self
                        .lports
                        .as_mut()
                        .and_then(|u| u.release(&r.laddr.0, r.laddr.1));
                    if let (Some(id), Some(pool)) =
                        (released, self.dests.svcs[h as usize].pool.as_mut())
                    {
                        pool.release(id);
                    }
                }
                return refuse(self, Counter::SyncTableFull);
            }
        };
        if let (ForwardMode::Nat, Some(owners)) = (r.mode, &self.nat_owners) {
            owners.set(&self.sessions.get(id).outbound_key(), self.cfg.id);
        }
        self.dests.dests[dest as usize].refs += 1;
        self.dests.svcs[h as usize].refs += 1;
        self.dests.update_load(dest, |l| {
            if inactive {
                l.inactive += 1;
            } else {
                l.active += 1;
            }
        });
        self.count(Counter::SyncInstalled);
        Ok(())
    }

    /// A peer closed a session before its time: this worker's copy goes
    /// (a template with connections left leaves the index and goes with
    /// the last of them). Nothing if it has none.
    fn remove_synced(&mut self, r: &SessionRecord) {
        let in_key = inbound_key(r);
        let Some(id) = self.sessions.lookup_in(&in_key) else {
            return;
        };
        let s = self.sessions.get(id);
        if s.is_template() && s.refs() > 0 {
            self.sessions.unhash(id);
        } else {
            self.close(id);
        }
        self.count(Counter::SyncRemoved);
    }

    /// A peer's persistence template: the client group's real server, so
    /// that its next connection here goes where the peer sent the others.
    /// Installed if new (on standby services too), its deadline renewed if
    /// this worker has it; it lasts this director's persistence timeout
    /// from the last record. Refused when this director's service has no
    /// persistence or no such real server, or the table is 90% full.
    fn install_template(&mut self, r: &SessionRecord, now: u32) -> Result<(), Counter> {
        let refuse = |w: &mut Worker, c: Counter| {
            w.count(c);
            Err(c)
        };
        let Some(key) = service_key(r) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let Some(si) = self.snap.find(&key) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let spec = &self.snap.services[si as usize].spec;
        let Some(pers) = spec.persistence else {
            return refuse(self, Counter::SyncUnknown);
        };
        let Some(i) = real_of(spec, r) else {
            return refuse(self, Counter::SyncUnknown);
        };
        let expires = now.wrapping_add(pers.timeout);
        // A template's record has the client group and port 0.
        let tkey = inbound_key(r);
        let h = self.svc_of_snap[si as usize];
        let dest = self.dests.svcs[h as usize].dests[i];
        if let Some(tid) = self.sessions.lookup_in(&tkey) {
            let t = self.sessions.get_mut(tid);
            if t.is_template() && t.dest == dest {
                t.expires = expires;
                self.count(Counter::SyncUpdated);
                return Ok(());
            }
            // The peer moved the group to another server: this one's
            // template leaves the index (its connections keep it alive).
            if t.is_template() {
                if t.refs() == 0 {
                    self.close(tid);
                } else {
                    self.sessions.unhash(tid);
                }
            }
        }
        if u64::from(self.sessions.len()) * 10 >= u64::from(self.sessions.capacity()) * 9 {
            return refuse(self, Counter::SyncTableFull);
        }
        let Some(_) = self.place_template(&tkey, r.rs, h, i, expires) else {
            return refuse(self, Counter::SyncTableFull);
        };
        self.count(Counter::SyncInstalled);
        Ok(())
    }
}

/// The inbound tuple of a record's session (a template's: the client
/// group, port 0).
fn inbound_key(r: &SessionRecord) -> FlowKey {
    FlowKey {
        src: r.client.0,
        dst: r.vip.0,
        sport: r.client.1,
        dport: r.vip.1,
        proto: r.proto,
    }
}

/// The service a record is of, as this director keys it.
fn service_key(r: &SessionRecord) -> Option<ServiceKey> {
    let vip = session::ip(&r.vip.0);
    if r.mark != 0 {
        return Some(ServiceKey::fwmark(r.mark, vip.is_ipv6()));
    }
    Some(ServiceKey::new(
        Protocol::from_number(r.proto)?,
        vip,
        r.service_port,
    ))
}

/// The index in `spec` of the record's real server (one without a port of
/// its own takes the connection's).
fn real_of(spec: &ServiceSpec, r: &SessionRecord) -> Option<usize> {
    let rs_ip = session::ip(&r.rs.0);
    spec.reals
        .iter()
        .position(|x| x.addr == rs_ip && (x.port == r.rs.1 || x.port == 0))
}
