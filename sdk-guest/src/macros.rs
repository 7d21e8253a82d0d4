//! `filter_plugin!`, `transform_plugin!`, `router_plugin!` and `scheduler_plugin!`: turn one author
//! function (plus an optional `init`) into a complete component export.
//!
//! Each expands to a `pub struct QuiverPlugin` whose associated functions (`init`, and `filter`,
//! `transform`, `route` or `schedule`) run the batch loop natively, so a plugin's own tests call exactly what the broker
//! calls, and, in wasm builds only, to the wit-bindgen `Guest` impl and `export!` that forward to
//! them.

/// Exports a filter plugin: one verdict per record.
///
/// ```
/// use quiver_sdk_guest::{filter_plugin, testing, Config, OwnedRecord, Record};
///
/// struct Wanted(String);
///
/// fn init(config: &Config) -> Result<Wanted, String> {
///     Ok(Wanted(config.require("tag")?.to_owned()))
/// }
///
/// fn keep(wanted: &Wanted, record: &Record) -> bool {
///     record.has_tag(&wanted.0)
/// }
///
/// filter_plugin!(init = init, filter = keep);
/// // or, without configuration: filter_plugin!(filter = |r: &Record| !r.value.is_empty());
///
/// // Natively, the generated `QuiverPlugin` runs exactly what the component exports run.
/// assert!(QuiverPlugin::init([("other", "x")]).unwrap_err().contains("`tag`"));
/// QuiverPlugin::init([("tag", "b")]).unwrap();
/// let batch = testing::encode(&[
///     OwnedRecord::new("1").with_tag("a"),
///     OwnedRecord::new("2").with_tag("b"),
/// ])
/// .unwrap();
/// assert_eq!(QuiverPlugin::filter(batch), Ok(vec![false, true]));
/// ```
///
/// The filter may return `bool` or `Result<bool, E: Display>` (an error fails the whole batch).
#[macro_export]
macro_rules! filter_plugin {
    (filter = $filter:expr $(,)?) => {
        $crate::__quiver_plugin!(
            filter_world,
            filter,
            ::std::vec::Vec<bool>,
            init = |_: &$crate::Config| ::std::result::Result::Ok(()),
            run = |batch| $crate::filter_batch(batch, $filter).map_err(::std::string::String::from)
        );
    };
    (init = $init:expr, filter = $filter:expr $(,)?) => {
        $crate::__quiver_plugin!(
            filter_world,
            filter,
            ::std::vec::Vec<bool>,
            init = |config: &$crate::Config| $crate::__private::init_state(config, $init),
            run = |batch| $crate::__private::filter_with_state(batch, $filter)
        );
    };
}

/// Exports a transform plugin: each record may emit zero or more records into an [`Output`].
///
/// ```
/// use quiver_sdk_guest::{testing, transform_plugin, OwnedRecord, Output, Record, SdkError};
///
/// fn upper(record: &Record, out: &mut Output) -> Result<(), SdkError> {
///     out.keep_with_value(record, &record.value.to_ascii_uppercase())
/// }
///
/// transform_plugin!(transform = upper);
/// // with state: transform_plugin!(init = init, transform = f) where
/// //   fn init(&Config) -> Result<S, String> and fn f(&S, &Record, &mut Output) -> Result<(), E>
///
/// QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
/// let batch = testing::encode(&[OwnedRecord::new("hi").with_tag("t")]).unwrap();
/// let out = testing::decode(&QuiverPlugin::transform(batch).unwrap()).unwrap();
/// assert_eq!((out[0].value.as_slice(), out[0].tags.as_slice()), (&b"HI"[..], &["t".to_string()][..]));
/// ```
///
/// [`Output`]: crate::Output
#[macro_export]
macro_rules! transform_plugin {
    (transform = $transform:expr $(,)?) => {
        $crate::__quiver_plugin!(
            transform_world,
            transform,
            ::std::vec::Vec<u8>,
            init = |_: &$crate::Config| ::std::result::Result::Ok(()),
            run = |batch| {
                $crate::transform_batch(batch, $transform).map_err(::std::string::String::from)
            }
        );
    };
    (init = $init:expr, transform = $transform:expr $(,)?) => {
        $crate::__quiver_plugin!(
            transform_world,
            transform,
            ::std::vec::Vec<u8>,
            init = |config: &$crate::Config| $crate::__private::init_state(config, $init),
            run = |batch| $crate::__private::transform_with_state(batch, $transform)
        );
    };
}

/// Exports a router plugin: each record goes to any number of topics, added to a
/// [`Destinations`]; a record sent nowhere is dropped.
///
/// ```
/// use quiver_sdk_guest::{router_plugin, testing, Config, Destinations, OwnedRecord, Record};
///
/// struct Prefix(String);
///
/// fn init(config: &Config) -> Result<Prefix, String> {
///     Ok(Prefix(config.get_or("prefix", "by-tag.").to_owned()))
/// }
///
/// // Every tag becomes a topic; a record without tags is dropped.
/// fn route(prefix: &Prefix, record: &Record, dest: &mut Destinations) {
///     for tag in record.tags() {
///         dest.to(&format!("{}{tag}", prefix.0));
///     }
/// }
///
/// router_plugin!(init = init, route = route);
/// // or, without configuration: router_plugin!(route = |_: &Record, dest: &mut Destinations| dest.to("all"));
///
/// QuiverPlugin::init([("prefix", "t.")]).unwrap();
/// let batch = testing::encode(&[
///     OwnedRecord::new("1").with_tag("a").with_tag("b"),
///     OwnedRecord::new("2"),
///     OwnedRecord::new("3").with_tag("b"),
/// ])
/// .unwrap();
/// let routes = QuiverPlugin::route(batch).unwrap();
/// // The flat lists of the WIT `routes` record: each topic once, one count per record.
/// assert_eq!(routes.topics, ["t.a", "t.b"]);
/// assert_eq!(routes.counts, [2, 0, 1]);
/// assert_eq!(routes.targets, [0, 1, 1]);
/// assert_eq!(routes.per_record().unwrap(), vec![vec!["t.a", "t.b"], vec![], vec!["t.b"]]);
/// ```
///
/// The router may return `()` or `Result<(), E: Display>` (an error fails the whole batch).
///
/// [`Destinations`]: crate::Destinations
#[macro_export]
macro_rules! router_plugin {
    (route = $route:expr $(,)?) => {
        $crate::__quiver_plugin!(
            router_world,
            route,
            $crate::Routes => $crate::__private::router_world::Routes,
            init = |_: &$crate::Config| ::std::result::Result::Ok(()),
            run = |batch| $crate::route_batch(batch, $route).map_err(::std::string::String::from)
        );
    };
    (init = $init:expr, route = $route:expr $(,)?) => {
        $crate::__quiver_plugin!(
            router_world,
            route,
            $crate::Routes => $crate::__private::router_world::Routes,
            init = |config: &$crate::Config| $crate::__private::init_state(config, $init),
            run = |batch| $crate::__private::route_with_state(batch, $route)
        );
    };
}

/// Exports a scheduler plugin: one delivery delay in milliseconds per record (0 = now).
///
/// ```
/// use quiver_sdk_guest::{scheduler_plugin, testing, Config, OwnedRecord, Record};
///
/// struct Delay(u64);
///
/// fn init(config: &Config) -> Result<Delay, String> {
///     let ms = config.get_or("delay-ms", "1000");
///     ms.parse().map(Delay).map_err(|_| format!("`delay-ms` is not a number: {ms:?}"))
/// }
///
/// // Records tagged `later` wait; the others are delivered at once.
/// fn delay(delay: &Delay, record: &Record) -> u64 {
///     if record.has_tag("later") { delay.0 } else { 0 }
/// }
///
/// scheduler_plugin!(init = init, schedule = delay);
/// // or, without configuration: scheduler_plugin!(schedule = |_: &Record| 60_000);
///
/// assert!(QuiverPlugin::init([("delay-ms", "soon")]).unwrap_err().contains("delay-ms"));
/// QuiverPlugin::init([("delay-ms", "5000")]).unwrap();
/// let batch = testing::encode(&[
///     OwnedRecord::new("1").with_tag("later"),
///     OwnedRecord::new("2"),
/// ])
/// .unwrap();
/// assert_eq!(QuiverPlugin::schedule(batch), Ok(vec![5000, 0]));
/// ```
///
/// The scheduler may return `u64` or `Result<u64, E: Display>` (an error fails the whole batch).
#[macro_export]
macro_rules! scheduler_plugin {
    (schedule = $schedule:expr $(,)?) => {
        $crate::__quiver_plugin!(
            scheduler_world,
            schedule,
            ::std::vec::Vec<u64>,
            init = |_: &$crate::Config| ::std::result::Result::Ok(()),
            run = |batch| {
                $crate::schedule_batch(batch, $schedule).map_err(::std::string::String::from)
            }
        );
    };
    (init = $init:expr, schedule = $schedule:expr $(,)?) => {
        $crate::__quiver_plugin!(
            scheduler_world,
            schedule,
            ::std::vec::Vec<u64>,
            init = |config: &$crate::Config| $crate::__private::init_state(config, $init),
            run = |batch| $crate::__private::schedule_with_state(batch, $schedule)
        );
    };
}

/// Shared expansion of the plugin macros; not part of the API.
///
/// `$out` is what the batch function returns natively; `$out => $wasm` names a different type the
/// component export returns (converted with `Into`), for results that are a wit-bindgen record.
#[doc(hidden)]
#[macro_export]
macro_rules! __quiver_plugin {
    ($world:ident, $func:ident, $out:ty, init = $init:expr, run = $run:expr) => {
        $crate::__quiver_plugin!($world, $func, $out => $out, init = $init, run = $run);
    };
    ($world:ident, $func:ident, $out:ty => $wasm_out:ty, init = $init:expr, run = $run:expr) => {
        /// The plugin's entry points, generated by the SDK's plugin macro: the component's exports
        /// call these, and native tests can call them directly.
        pub struct QuiverPlugin;

        impl QuiverPlugin {
            /// Runs the plugin's `init` over `key=value` settings, as the broker does on attach.
            pub fn init<K, V>(
                config: impl ::std::iter::IntoIterator<Item = (K, V)>,
            ) -> ::std::result::Result<(), ::std::string::String>
            where
                K: ::std::convert::Into<::std::string::String>,
                V: ::std::convert::Into<::std::string::String>,
            {
                let config = $crate::Config::from_pairs(config);
                let init: fn(&$crate::Config) -> ::std::result::Result<(), ::std::string::String> =
                    $init;
                init(&config)
            }

            /// Runs the plugin over one encoded batch, as the broker does.
            pub fn $func(
                batch: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<$out, ::std::string::String> {
                let run: fn(::std::vec::Vec<u8>) -> ::std::result::Result<$out, ::std::string::String> =
                    $run;
                run(batch)
            }
        }

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::$world as world;

            impl world::Guest for QuiverPlugin {
                fn init(
                    config: ::std::vec::Vec<world::ConfigEntry>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    QuiverPlugin::init(config.into_iter().map(|e| (e.key, e.value)))
                }

                fn $func(
                    batch: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<$wasm_out, ::std::string::String> {
                    QuiverPlugin::$func(batch).map(::std::convert::Into::into)
                }
            }

            $crate::__private::$world::export!(QuiverPlugin with_types_in $crate::__private::$world);
        };
    };
}

// The forms the doc-tests above only mention: no `init`, closures, and `Result` returns.
#[cfg(test)]
mod tests {
    mod router {
        use crate::{testing, Destinations, OwnedRecord, Record};

        crate::router_plugin!(
            route = |r: &Record, dest: &mut Destinations| {
                if r.value == b"bad" {
                    return Err("cannot route");
                }
                if !r.value.is_empty() {
                    dest.to("all");
                }
                Ok(())
            }
        );

        #[test]
        fn without_init() {
            QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
            let batch = testing::encode(&[OwnedRecord::new("x"), OwnedRecord::new("")]).unwrap();
            let routes = QuiverPlugin::route(batch).unwrap();
            assert_eq!(routes.per_record().unwrap(), vec![vec!["all"], vec![]]);
            let bad = testing::encode(&[OwnedRecord::new("x"), OwnedRecord::new("bad")]).unwrap();
            assert_eq!(
                QuiverPlugin::route(bad),
                Err("record at offset 1: cannot route".to_string())
            );
            let err = QuiverPlugin::route(b"junk".to_vec()).unwrap_err();
            assert!(err.starts_with("input batch rejected"), "{err}");
        }
    }

    mod scheduler {
        use crate::{testing, OwnedRecord, Record};

        crate::scheduler_plugin!(schedule = |r: &Record| r.value.len() as u64);

        #[test]
        fn without_init() {
            QuiverPlugin::init(Vec::<(String, String)>::new()).unwrap();
            let batch = testing::encode(&[OwnedRecord::new("abc"), OwnedRecord::new("")]).unwrap();
            assert_eq!(QuiverPlugin::schedule(batch), Ok(vec![3, 0]));
        }
    }

    mod scheduler_with_state {
        use crate::{testing, Config, OwnedRecord, Record};

        fn init(config: &Config) -> Result<u64, String> {
            Ok(config
                .require("max")?
                .parse()
                .map_err(|_| "max: not a number")?)
        }

        fn delay(max: &u64, record: &Record) -> Result<u64, String> {
            let ms = record.value.len() as u64 * 100;
            if ms > *max {
                return Err(format!("{ms} ms is over the maximum {max}"));
            }
            Ok(ms)
        }

        crate::scheduler_plugin!(init = init, schedule = delay);

        #[test]
        fn errors_fail_the_batch_and_need_init() {
            let batch = testing::encode(&[OwnedRecord::new("ab"), OwnedRecord::new("abcd")]);
            let batch = batch.unwrap();
            assert!(QuiverPlugin::init([("other", "1")]).is_err());
            let err = QuiverPlugin::schedule(batch.clone()).unwrap_err();
            assert_eq!(err, "the plugin was called before a successful init");
            QuiverPlugin::init([("max", "1000")]).unwrap();
            assert_eq!(QuiverPlugin::schedule(batch.clone()), Ok(vec![200, 400]));
            QuiverPlugin::init([("max", "300")]).unwrap();
            assert_eq!(
                QuiverPlugin::schedule(batch),
                Err("record at offset 1: 400 ms is over the maximum 300".to_string())
            );
        }
    }
}
