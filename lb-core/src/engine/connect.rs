//! A new connection, in the order its first packet meets the steps
//! ([`Worker::new_session`]):
//! 1. [`admit`](Worker::admit): only a first packet that could open a
//!    connection (a SYN; with `sloppy_tcp`, any TCP segment but a RST),
//!    whole and correct, only while there is room, and only from a client
//!    its service's allow and deny lists let in ([`screen`](Worker::screen));
//! 2. [`choose_server`](Worker::choose_server): a persistence template's
//!    real server, or the scheduler's (which then gets a template);
//! 3. [`local_address`](Worker::local_address): Full-NAT's local address
//!    and port from this worker's share, which fix the reply tuple;
//! 4. [`first_session`](Worker::first_session): the session as the packet
//!    opens it;
//! 5. [`nat_reply_tuple`](Worker::nat_reply_tuple): NAT's reply tuple is
//!    fixed by the client and the real server, so it is checked free;
//! 6. [`store`](Worker::store): the session into the table, with its real
//!    server's, service's and template's counts;
//! 7. the packet is forwarded as on any session ([`Worker::send_to_rs`]).
//!
//! Each step that refuses names its drop counter.

use crate::filter::Verdict;
use crate::offload;
use crate::packet::{PacketBuf, Parsed};
use crate::sched::FlowInfo;
use crate::service::Persistence;
use crate::session::State;
use crate::session::{self, flags, next_state, Direction, FlowKey, Hashed, Session, SessionId};
use crate::types::{Addr, ForwardMode, Prefetch, NIL};
use crate::wire::ip_proto;

use super::{Action, Counter, Worker};

/// The real server a new connection goes to, as the worker keeps it.
#[derive(Clone, Copy)]
struct Target {
    /// The worker's handle of the real server.
    dest: u32,
    addr: Addr,
    port: u16,
    mode: ForwardMode,
}

/// A local address and port: Full-NAT's source towards the real server.
type Local = (Addr, u16);

impl Worker {
    /// A new connection to service `si`; `hin` is the packet's tuple hashed.
    pub(super) fn new_session<P: Prefetch>(
        &mut self,
        buf: &mut impl PacketBuf,
        p: &Parsed,
        si: u32,
        hin: Hashed,
        prefetch: &P,
    ) -> Action {
        match self.open(buf, p, si, hin, prefetch) {
            // The stored session differs from `s` only in what the table
            // keeps (flags, deadline, timer links), which forwarding does
            // not read.
            Ok(s) => self.send_to_rs(buf, p, &s),
            Err(why) => self.drop(why),
        }
    }

    /// Steps 1 to 6: the session the packet opens, stored.
    fn open<P: Prefetch>(
        &mut self,
        buf: &impl PacketBuf,
        p: &Parsed,
        si: u32,
        hin: Hashed,
        prefetch: &P,
    ) -> Result<Session, Counter> {
        self.admit(buf, p)?;
        self.screen(si, p)?;
        let h = self.svc_of_snap[si as usize];
        let (i, template) = self.choose_server(si, h, p)?;
        let target = self.target(h, i, p.dport);
        let (laddr, hout) = match target.mode {
            ForwardMode::Fnat => self.local_address(h, &target, p.proto, prefetch)?,
            _ => (([0; 16], 0), Hashed::default()),
        };
        let s = self.first_session(p, &target, template, laddr);
        let hout = match s.mode {
            ForwardMode::Nat => self.nat_reply_tuple(&s)?,
            _ => hout,
        };
        let id = self.store(&s, hin, hout, template, h, prefetch)?;
        self.emit(id);
        self.count(Counter::SessionsCreated);
        if p.proto == ip_proto::TCP && !p.tcp_flags.syn() {
            self.count(Counter::SessionsPickedUp);
        }
        self.account(target.dest, p.l3_end - p.l3_offset, true);
        Ok(s)
    }

    /// Step 1: whether the packet may open a connection.
    fn admit(&self, buf: &impl PacketBuf, p: &Parsed) -> Result<(), Counter> {
        if p.fragment {
            return Err(Counter::DropFragment);
        }
        if p.proto == ip_proto::TCP && (!p.tcp_flags.syn() || p.tcp_flags.ack()) {
            let picked_up = self.cfg.sloppy_tcp && !p.tcp_flags.syn() && !p.tcp_flags.rst();
            if !picked_up {
                return Err(Counter::DropTcpNotSyn);
            }
        }
        // A corrupt first packet must not hold a session (and a Full-NAT
        // port) for a connection nobody opened. Established traffic is not
        // summed again: its receiver drops a bad segment anyway.
        if !offload::l4_checksum_ok(buf.data(), p, buf.rx_l4_sum()) {
            return Err(Counter::DropBadChecksum);
        }
        if self.sessions.is_full() {
            return Err(Counter::DropTableFull);
        }
        Ok(())
    }

    /// Step 1 still: the service's allow and deny lists.
    fn screen(&self, si: u32, p: &Parsed) -> Result<(), Counter> {
        match self.snap.services[si as usize].screen.verdict(&p.src) {
            Verdict::Pass => Ok(()),
            Verdict::Denied => Err(Counter::DropDenied),
            Verdict::NotAllowed => Err(Counter::DropNotAllowed),
        }
    }

    /// Step 2: the index of the real server in service `si` (worker entry
    /// `h`), and the persistence template the connection follows.
    fn choose_server(
        &mut self,
        si: u32,
        h: u32,
        p: &Parsed,
    ) -> Result<(usize, Option<SessionId>), Counter> {
        // Read out rather than held: a clone of the snapshot's Arc would
        // cost two atomic operations.
        let (pers, vport) = {
            let spec = &self.snap.services[si as usize].spec;
            (spec.persistence, spec.key.port)
        };
        let Some(pers) = pers else {
            let i = self.schedule(si, h, p).ok_or(Counter::DropNoDest)?;
            return Ok((i, None));
        };
        let tkey = FlowKey {
            src: mask(&p.src, pers.prefix_len, p.is_v4()),
            dst: p.dst,
            sport: 0,
            dport: vport,
            proto: p.proto,
        };
        if let Some((i, tid)) = self.follow_template(si, h, &tkey) {
            return Ok((i, Some(tid)));
        }
        // Room for the template and the connection.
        if self.sessions.len() + 2 > self.sessions.capacity() {
            return Err(Counter::DropTableFull);
        }
        let i = self.schedule(si, h, p).ok_or(Counter::DropNoDest)?;
        let tid = self.new_template(si, h, i, &tkey, pers)?;
        Ok((i, Some(tid)))
    }

    /// The live template for `tkey`, with its real server's index, if it
    /// still may be followed (its server is in the service, with weight).
    /// A template that may not goes now, or leaves the index while
    /// connections still point at it.
    fn follow_template(&mut self, si: u32, h: u32, tkey: &FlowKey) -> Option<(usize, SessionId)> {
        let tid = self.sessions.lookup_in(tkey)?;
        let t = *self.sessions.get(tid);
        let d = &self.dests.dests[t.dest as usize];
        let weights = &self.snap.services[si as usize].weights;
        if d.idx != NIL && d.svc == h && weights[d.idx as usize] > 0 {
            return Some((d.idx as usize, tid));
        }
        if t.refs() == 0 {
            self.close(tid);
        } else {
            // Its connections still point at it: it leaves the index now
            // and goes when the last of them has gone.
            self.sessions.unhash(tid);
        }
        None
    }

    /// A persistence template for `tkey` pointing at real server `i`.
    fn new_template(
        &mut self,
        si: u32,
        h: u32,
        i: usize,
        tkey: &FlowKey,
        pers: Persistence,
    ) -> Result<SessionId, Counter> {
        let rs = &self.snap.services[si as usize].spec.reals[i];
        let rs = (session::addr(rs.addr), rs.port);
        let expires = self.now.wrapping_add(pers.timeout);
        let tid = self
            .place_template(tkey, rs, h, i, expires)
            .ok_or(Counter::DropTableFull)?;
        self.count(Counter::TemplatesCreated);
        self.emit(tid);
        Ok(tid)
    }

    /// Inserts the template of `tkey` (client group, VIP and port) for
    /// real server `i` (at `rs`) of worker entry `h`, with its counts;
    /// `None` when the table is full.
    pub(super) fn place_template(
        &mut self,
        tkey: &FlowKey,
        rs: (Addr, u16),
        h: u32,
        i: usize,
        expires: u32,
    ) -> Option<SessionId> {
        let t = Session::new(
            tkey.proto,
            (tkey.src, 0),
            (tkey.dst, tkey.dport),
            rs,
            ([0; 16], 0),
            ForwardMode::Dr,
            State::Template,
        );
        let dest = self.dests.svcs[h as usize].dests[i];
        let tid = self.sessions.insert(t, expires).ok()?;
        let ts = self.sessions.get_mut(tid);
        ts.flags = (ts.flags | flags::TEMPLATE) & !flags::HAS_OUT;
        ts.dest = dest;
        ts.set_refs(0);
        let d = &mut self.dests.dests[dest as usize];
        d.refs += 1;
        d.templates += 1;
        self.dests.svcs[h as usize].refs += 1;
        Some(tid)
    }

    /// Real server `i` of worker entry `h`, for a packet to `dport`.
    fn target(&self, h: u32, i: usize, dport: u16) -> Target {
        let dest = self.dests.svcs[h as usize].dests[i];
        let d = &self.dests.dests[dest as usize];
        Target {
            dest,
            addr: d.addr,
            // A real server of a catch-all or firewall-mark service has no
            // port of its own: the connection keeps its destination port.
            port: if d.port == 0 { dport } else { d.port },
            mode: d.mode,
        }
    }

    /// Step 3 (Full-NAT): a local address and port of service entry `h`'s
    /// pool whose reply tuple from `t` is free, and that tuple's hash.
    fn local_address<P: Prefetch>(
        &mut self,
        h: u32,
        t: &Target,
        proto: u8,
        prefetch: &P,
    ) -> Result<(Local, Hashed), Counter> {
        let sessions = &self.sessions;
        let out_key = |l: &Addr, port: u16| FlowKey {
            src: t.addr,
            dst: *l,
            sport: t.port,
            dport: port,
            proto,
        };
        let taken = |l: &Addr, port: u16| {
            let k = out_key(l, port);
            sessions.out_tuple_in_use_at(sessions.hash(&k), &k)
        };
        let pool = self.dests.svcs[h as usize].pool.as_mut();
        let (pool, ports) = pool
            .zip(self.lports.as_mut())
            .ok_or(Counter::DropLaddrExhausted)?;
        let laddr = pool
            .allocate(ports, taken)
            .ok_or(Counter::DropLaddrExhausted)?;
        let hout = self.sessions.hash(&out_key(&laddr.0, laddr.1));
        // Its bucket line, needed only when the burst is over: see
        // `SessionTable::insert_deferred`.
        if P::ACTIVE && self.sessions.len() >= self.cfg.prefetch_from {
            self.sessions.prefetch_bucket(hout, prefetch);
        }
        Ok((laddr, hout))
    }

    /// Step 4: the session `p` opens to `t`.
    fn first_session(
        &self,
        p: &Parsed,
        t: &Target,
        template: Option<SessionId>,
        laddr: Local,
    ) -> Session {
        let dir = if t.mode.maps_ports() {
            Direction::Input
        } else {
            Direction::InputOnly
        };
        let state = match p.proto {
            // A connection taken up mid-way (`sloppy_tcp`) was established.
            ip_proto::TCP if !p.tcp_flags.syn() => next_state(State::Established, dir, p.tcp_flags),
            ip_proto::TCP => next_state(State::None, dir, p.tcp_flags),
            ip_proto::UDP => State::Udp,
            _ => State::Icmp,
        };
        let mut s = Session::new(
            p.proto,
            (p.src, p.sport),
            (p.dst, p.dport),
            (t.addr, t.port),
            laddr,
            t.mode,
            state,
        );
        s.dest = t.dest;
        s.set_template(template.unwrap_or(NIL));
        s
    }

    /// Step 5 (NAT): the reply tuple's hash, if no session holds it.
    /// (Full-NAT's pool chose a free one in step 3.)
    fn nat_reply_tuple(&self, s: &Session) -> Result<Hashed, Counter> {
        let k = s.outbound_key();
        let hout = self.sessions.hash(&k);
        if self.sessions.out_tuple_in_use_at(hout, &k) {
            return Err(Counter::DropTupleCollision);
        }
        Ok(hout)
    }

    /// Step 6: `s` into the table (hashed `hin` and `hout`), with the
    /// counts that follow it: its template's, its real server's and
    /// service entry `h`'s, NAT's reply owner; its id, which the peers
    /// hear of ([`Worker::emit`]).
    fn store<P: Prefetch>(
        &mut self,
        s: &Session,
        hin: Hashed,
        hout: Hashed,
        template: Option<SessionId>,
        h: u32,
        prefetch: &P,
    ) -> Result<SessionId, Counter> {
        let expires = self.now.wrapping_add(s.state.timeout(&self.snap.timeouts));
        let id = self
            .sessions
            .insert_deferred(*s, expires, hin, hout)
            .map_err(|_| Counter::DropTableFull)?;
        // The next new connection's slot: its lines are read (the free
        // list runs through them) and written then.
        if P::ACTIVE && self.sessions.len() >= self.cfg.prefetch_from {
            self.sessions.prefetch_free(prefetch);
        }
        if let (ForwardMode::Nat, Some(owners)) = (s.mode, &self.nat_owners) {
            owners.set(&s.outbound_key(), self.cfg.id);
        }
        if let Some(tid) = template {
            let t = self.sessions.get_mut(tid);
            t.set_refs(t.refs() + 1);
        }
        let dest = s.dest as usize;
        self.dests.dests[dest].refs += 1;
        self.dests.dests[dest].stats.conns += 1;
        self.dests.svcs[h as usize].refs += 1;
        self.dests.svcs[h as usize].stats.conns += 1;
        self.dests.update_load(s.dest, |l| l.inactive += 1);
        Ok(id)
    }

    /// The scheduler's pick for service `si` (worker entry `h`).
    fn schedule(&mut self, si: u32, h: u32, p: &Parsed) -> Option<usize> {
        let svc = &self.snap.services[si as usize];
        let e = &mut self.dests.svcs[h as usize];
        let flow = FlowInfo {
            src: p.src,
            src_port: p.sport,
            dst: p.dst,
        };
        svc.sched.pick(
            &mut e.sched,
            &svc.weights,
            &e.loads,
            &flow,
            u64::from(self.now),
        )
    }
}

/// `a` with only its first `len` bits (of the IPv4 address if `v4`):
/// the client group a persistence template stands for (ipvsadm -M).
fn mask(a: &Addr, len: u8, v4: bool) -> Addr {
    let bits = if v4 {
        96 + u32::from(len.min(32))
    } else {
        u32::from(len.min(128))
    };
    let mut out = *a;
    for (i, b) in out.iter_mut().enumerate() {
        let start = u32::try_from(i).unwrap_or(0) * 8;
        if start >= bits {
            *b = 0;
        } else if start + 8 > bits {
            *b &= 0xffu8 << (start + 8 - bits);
        }
    }
    out
}
