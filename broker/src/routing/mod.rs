//! Exchanges: named routing rules (AMQP kinds) that bind to topics, kept in sled. Producing to an
//! exchange appends each record to every bound topic it matches (once per topic however many of
//! its bindings match); records that match nothing go to the exchange's alternate topic, or fail
//! the produce. See docs/routing.md.

pub mod index;
pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
pub use quiver_proto::routing::{Binding, ExchangeInfo};
use quiver_proto::{Batch, RecordRef};
pub use rules::{ExchangeKind, HeaderMatch};

use crate::meta::{MetaError, MetaStore, Namespace};

/// Why an exchange operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("unknown exchange {0:?}")]
    UnknownExchange(String),
    #[error("exchange {0:?} already exists")]
    ExchangeExists(String),
    #[error("invalid binding: {0}")]
    InvalidBinding(String),
    #[error(
        "{count} record(s) match no binding of exchange {exchange:?} and it has no alternate topic"
    )]
    Unroutable { exchange: String, count: usize },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl RoutingError {
    pub fn code(&self) -> quiver_proto::ErrorCode {
        use quiver_proto::ErrorCode;
        match self {
            RoutingError::UnknownExchange(_) => ErrorCode::UnknownExchange,
            RoutingError::ExchangeExists(_) => ErrorCode::ExchangeExists,
            RoutingError::InvalidBinding(_) => ErrorCode::InvalidRequest,
            RoutingError::Unroutable { .. } => ErrorCode::Unroutable,
            RoutingError::Meta(_) => ErrorCode::StorageError,
        }
    }
}

/// An exchange as stored (the wire's description of it).
pub type ExchangeDef = ExchangeInfo;

/// An exchange ready to route: its definition with its bindings indexed once.
#[derive(Debug)]
pub struct Exchange {
    pub def: ExchangeDef,
    direct: HashMap<String, Vec<usize>>,
    trie: index::TopicTrie,
}

/// Per-record scratch space reused across a batch.
#[derive(Debug, Default)]
pub struct Scratch {
    hits: Vec<usize>,
    words: index::TrieScratch,
}

impl Exchange {
    pub(crate) fn new(def: ExchangeDef) -> Exchange {
        let mut direct: HashMap<String, Vec<usize>> = HashMap::new();
        let mut trie = index::TopicTrie::default();
        for (i, b) in def.bindings.iter().enumerate() {
            match def.kind {
                ExchangeKind::Direct => direct.entry(b.key.clone()).or_default().push(i),
                ExchangeKind::Topic => trie.insert(&b.key, i),
                ExchangeKind::Fanout | ExchangeKind::Headers => {}
            }
        }
        Exchange { def, direct, trie }
    }

    /// The destination topics of one record, each once, in binding order.
    pub fn destinations<'e>(
        &'e self,
        r: &RecordRef<'_>,
        scratch: &mut Scratch,
        out: &mut Vec<&'e str>,
    ) {
        out.clear();
        let hits = &mut scratch.hits;
        hits.clear();
        let key = r.key.map(String::from_utf8_lossy).unwrap_or_default();
        match self.def.kind {
            ExchangeKind::Fanout => hits.extend(0..self.def.bindings.len()),
            ExchangeKind::Direct => hits.extend(self.direct.get(&*key).into_iter().flatten()),
            ExchangeKind::Topic => self.trie.matches(&key, &mut scratch.words, hits),
            ExchangeKind::Headers => hits.extend(
                self.def
                    .bindings
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        rules::headers_match(&b.headers, b.header_match, |k| r.header(k))
                    })
                    .map(|(i, _)| i),
            ),
        }
        hits.sort_unstable();
        hits.dedup();
        for &i in hits.iter() {
            let topic = self.def.bindings[i].topic.as_str();
            if !out.contains(&topic) {
                out.push(topic);
            }
        }
    }

    /// Splits a batch by destination: for each topic, the indexes of its records (in order).
    /// Unroutable records go to the alternate topic, or make this an error.
    pub fn route(&self, batch: &Batch) -> Result<BTreeMap<String, Vec<usize>>, RoutingError> {
        let mut plan: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let (mut scratch, mut dests) = (Scratch::default(), Vec::new());
        let mut unroutable = 0;
        for (i, r) in batch.records().enumerate() {
            self.destinations(&r, &mut scratch, &mut dests);
            if dests.is_empty() {
                match &self.def.alternate {
                    Some(alt) => plan.entry(alt.clone()).or_default().push(i),
                    None => unroutable += 1,
                }
            }
            for d in &dests {
                match plan.get_mut(*d) {
                    Some(v) => v.push(i),
                    None => {
                        plan.insert((*d).to_owned(), vec![i]);
                    }
                }
            }
        }
        if unroutable > 0 {
            return Err(RoutingError::Unroutable {
                exchange: self.def.name.clone(),
                count: unroutable,
            });
        }
        Ok(plan)
    }
}

/// Every exchange, cached in memory and stored in sled.
#[derive(Debug)]
pub struct Exchanges {
    meta: MetaStore,
    map: RwLock<HashMap<String, Arc<Exchange>>>,
}

impl Exchanges {
    /// Loads the stored exchanges.
    pub fn open(meta: MetaStore) -> Result<Exchanges, RoutingError> {
        let stored: Vec<(String, ExchangeDef)> = meta.scan(Namespace::Exchanges, "")?;
        let map = stored
            .into_iter()
            .map(|(name, def)| (name, Arc::new(Exchange::new(def))))
            .collect();
        Ok(Exchanges {
            meta,
            map: RwLock::new(map),
        })
    }

    pub fn get(&self, name: &str) -> Result<Arc<Exchange>, RoutingError> {
        self.map
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| RoutingError::UnknownExchange(name.to_owned()))
    }

    pub fn list(&self) -> Vec<ExchangeDef> {
        let mut v: Vec<ExchangeDef> = self.map.read().values().map(|e| e.def.clone()).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Creates an exchange (the caller has checked the name and the alternate topic).
    pub fn create(
        &self,
        name: &str,
        kind: ExchangeKind,
        alternate: Option<String>,
    ) -> Result<ExchangeDef, RoutingError> {
        let mut map = self.map.write();
        if map.contains_key(name) {
            return Err(RoutingError::ExchangeExists(name.to_owned()));
        }
        let def = ExchangeDef {
            name: name.to_owned(),
            kind,
            alternate,
            bindings: Vec::new(),
            router: None,
            created_ms: crate::util::now_ms(),
        };
        self.meta.put_durable(Namespace::Exchanges, name, &def)?;
        map.insert(name.to_owned(), Arc::new(Exchange::new(def.clone())));
        Ok(def)
    }

    /// Adds a binding (the same binding twice is one binding).
    pub fn bind(&self, name: &str, binding: Binding) -> Result<ExchangeDef, RoutingError> {
        let mut map = self.map.write();
        let current = map
            .get(name)
            .ok_or_else(|| RoutingError::UnknownExchange(name.to_owned()))?;
        check_binding(current.def.kind, &binding)?;
        let mut def = current.def.clone();
        if !def.bindings.contains(&binding) {
            def.bindings.push(binding);
        }
        self.meta.put_durable(Namespace::Exchanges, name, &def)?;
        map.insert(name.to_owned(), Arc::new(Exchange::new(def.clone())));
        Ok(def)
    }

    pub fn delete(&self, name: &str) -> Result<(), RoutingError> {
        let mut map = self.map.write();
        if map.remove(name).is_none() {
            return Err(RoutingError::UnknownExchange(name.to_owned()));
        }
        self.meta.remove_durable(Namespace::Exchanges, name)?;
        Ok(())
    }
}

/// A binding must say what it matches on for the kinds that need it.
pub(crate) fn check_binding(kind: ExchangeKind, b: &Binding) -> Result<(), RoutingError> {
    let bad = |m: &str| Err(RoutingError::InvalidBinding(m.to_owned()));
    match kind {
        ExchangeKind::Headers if !b.key.is_empty() => {
            bad("a headers exchange matches on --header K=V, not on a key")
        }
        ExchangeKind::Direct | ExchangeKind::Topic | ExchangeKind::Fanout
            if !b.headers.is_empty() =>
        {
            bad("only headers exchanges match on headers")
        }
        _ if b.key.len() > 255 => bad("a binding key has at most 255 bytes"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{BatchBuilder, RecordData};

    /// A record as (key, headers).
    type Rec<'a> = (&'a str, &'a [(&'a str, &'a [u8])]);

    fn batch(recs: &[Rec<'_>]) -> Batch {
        let mut b = BatchBuilder::new();
        for (key, headers) in recs {
            b.push(&RecordData {
                timestamp: 1,
                key: Some(key.as_bytes()),
                value: b"v",
                headers,
                tags: &[],
            })
            .unwrap();
        }
        Batch::parse(b.finish().unwrap()).unwrap()
    }

    fn binding(topic: &str, key: &str) -> Binding {
        Binding {
            topic: topic.into(),
            key: key.into(),
            headers: Vec::new(),
            header_match: HeaderMatch::All,
        }
    }

    #[test]
    fn exchanges_route_persist_and_refuse_unroutable_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ex = Exchanges::open(MetaStore::open(dir.path()).unwrap()).unwrap();
            ex.create("orders", ExchangeKind::Topic, None).unwrap();
            ex.bind("orders", binding("eu", "orders.*.eu")).unwrap();
            ex.bind("orders", binding("all", "orders.#")).unwrap();
            ex.bind("orders", binding("all", "#.eu")).unwrap();
            assert!(ex.create("orders", ExchangeKind::Direct, None).is_err());
        }
        let ex = Exchanges::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        let e = ex.get("orders").unwrap();
        assert_eq!(e.def.bindings.len(), 3);
        let b = batch(&[("orders.new.eu", &[]), ("orders.new.us", &[])]);
        let plan = e.route(&b).unwrap();
        assert_eq!(plan["eu"], vec![0]);
        assert_eq!(plan["all"], vec![0, 1], "one copy per topic");
        let err = e.route(&batch(&[("other", &[])])).unwrap_err();
        assert!(
            matches!(err, RoutingError::Unroutable { count: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn headers_fanout_direct_and_alternates() {
        let dir = tempfile::tempdir().unwrap();
        let ex = Exchanges::open(MetaStore::open(dir.path()).unwrap()).unwrap();
        ex.create("h", ExchangeKind::Headers, Some("rest".into()))
            .unwrap();
        let eu = Binding {
            headers: vec![("region".into(), "eu".into())],
            header_match: HeaderMatch::Any,
            ..binding("eu", "")
        };
        ex.bind("h", eu).unwrap();
        assert!(ex.bind("h", binding("x", "key")).is_err());
        let plan = ex
            .get("h")
            .unwrap()
            .route(&batch(&[
                ("k", &[("region", b"eu")]),
                ("k", &[("region", b"us")]),
            ]))
            .unwrap();
        assert_eq!(
            (plan["eu"].clone(), plan["rest"].clone()),
            (vec![0], vec![1])
        );

        ex.create("f", ExchangeKind::Fanout, None).unwrap();
        ex.bind("f", binding("a", "")).unwrap();
        ex.bind("f", binding("b", "")).unwrap();
        let plan = ex.get("f").unwrap().route(&batch(&[("x", &[])])).unwrap();
        assert_eq!(plan.len(), 2);

        ex.create("d", ExchangeKind::Direct, None).unwrap();
        ex.bind("d", binding("pay", "payment")).unwrap();
        let d = ex.get("d").unwrap();
        assert_eq!(
            d.route(&batch(&[("payment", &[])])).unwrap()["pay"],
            vec![0]
        );
        assert!(d.route(&batch(&[("payments", &[])])).is_err());
        ex.delete("d").unwrap();
        assert!(ex.get("d").is_err());
        assert_eq!(ex.list().len(), 2);
    }
}
