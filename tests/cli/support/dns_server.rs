//! A real DNS server on 127.0.0.1:0 (UDP and TCP), built on hickory-proto, whose records a
//! test can add or remove while initbox waits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

#[derive(Default)]
struct Zone {
    records: Vec<Record>,
    /// Names answered with REFUSED, as a nameserver that is not authoritative for them.
    refused: Vec<Name>,
    servfail: bool,
    /// Drop every query without a word, as a nameserver that died or is firewalled off.
    silent: bool,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

fn fqdn(name: &str) -> Name {
    let mut name = Name::from_str(name).unwrap();
    name.set_fqdn(true);
    name
}

impl DnsServer {
    pub fn start() -> Self {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        // TCP on the same port, for truncated answers and resolvers that retry over TCP.
        let tcp = TcpListener::bind(addr).ok();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(std::time::Duration::from_millis(100)))
            .unwrap();
        {
            let (zone, queries, stop) = (zone.clone(), queries.clone(), stop.clone());
            thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((len, peer)) = udp.recv_from(&mut buffer) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::SeqCst);
                    if let Some(answer) = respond(&zone, &buffer[..len]) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            });
        }
        if let Some(tcp) = tcp {
            let (zone, queries) = (zone.clone(), queries.clone());
            thread::spawn(move || {
                // Connections of unanswered queries stay open, as a hung server's would.
                let mut unanswered = Vec::new();
                for stream in tcp.incoming() {
                    let Ok(mut stream) = stream else { break };
                    let mut length = [0u8; 2];
                    if stream.read_exact(&mut length).is_err() {
                        continue;
                    }
                    let mut query = vec![0u8; u16::from_be_bytes(length) as usize];
                    if stream.read_exact(&mut query).is_err() {
                        continue;
                    }
                    queries.fetch_add(1, Ordering::SeqCst);
                    match respond(&zone, &query) {
                        Some(answer) => {
                            let _ = stream.write_all(&(answer.len() as u16).to_be_bytes());
                            let _ = stream.write_all(&answer);
                        }
                        None => {
                            unanswered.push(stream);
                            if unanswered.len() > 64 {
                                unanswered.remove(0);
                            }
                        }
                    }
                }
            });
        }
        DnsServer {
            addr,
            zone,
            queries,
            stop,
        }
    }

    pub fn nameserver(&self) -> String {
        self.addr.to_string()
    }

    pub fn add(&self, name: &str, data: RData) {
        let record = Record::from_rdata(fqdn(name), 0, data);
        self.zone.lock().unwrap().records.push(record);
    }

    pub fn add_a(&self, name: &str, ip: &str) {
        self.add(
            name,
            RData::A(ip.parse::<std::net::Ipv4Addr>().unwrap().into()),
        );
    }

    pub fn add_aaaa(&self, name: &str, ip: &str) {
        self.add(
            name,
            RData::AAAA(ip.parse::<std::net::Ipv6Addr>().unwrap().into()),
        );
    }

    pub fn remove(&self, name: &str) {
        let name = fqdn(name);
        self.zone.lock().unwrap().records.retain(|r| r.name != name);
    }

    /// Answer queries for `name` with REFUSED.
    pub fn refuse(&self, name: &str) {
        self.zone.lock().unwrap().refused.push(fqdn(name));
    }

    /// Answer every query with SERVFAIL until switched off.
    pub fn set_servfail(&self, on: bool) {
        self.zone.lock().unwrap().servfail = on;
    }

    /// Answer nothing at all (UDP or TCP) until switched off: queries are counted and
    /// dropped.
    pub fn set_silent(&self, on: bool) {
        self.zone.lock().unwrap().silent = on;
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn respond(zone: &Mutex<Zone>, packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(query.clone());
    let zone = zone.lock().unwrap();
    if zone.silent {
        return None;
    }
    if zone.servfail {
        response.metadata.response_code = ResponseCode::ServFail;
        return response.to_vec().ok();
    }
    let name = query.name();
    if zone.refused.iter().any(|r| r == name) {
        response.metadata.response_code = ResponseCode::Refused;
        return response.to_vec().ok();
    }
    let same_name: Vec<&Record> = zone
        .records
        .iter()
        .filter(|r| r.name.eq_case(name) || r.name == *name)
        .collect();
    if same_name.is_empty() {
        response.metadata.response_code = ResponseCode::NXDomain;
        return response.to_vec().ok();
    }
    let wanted = query.query_type();
    let answers = same_name
        .into_iter()
        .filter(|r| r.record_type() == wanted || r.record_type() == RecordType::CNAME)
        .cloned();
    response.add_answers(answers);
    response.to_vec().ok()
}
