//! The wit-bindgen glue for the `quiver:plugin@0.1.0` worlds, generated once here (wasm builds only)
//! so plugin crates never point at the WIT file themselves.
//!
//! Each world gets its own module. `pub_export_macro` makes wit-bindgen embed only the *imports* of
//! a world in this library and emit the full world (with its exports) where the plugin invokes the
//! `export!` macro; so a filter plugin's component declares the `filter` world only, even though
//! this crate also carries the bindings of the other worlds.

/// Bindings of the `filter` world: `Guest` with `init` and `filter`, and the `host` import.
pub mod filter_world {
    wit_bindgen::generate!({
        world: "filter",
        path: "../wit",
        default_bindings_module: "quiver_sdk_guest::bindings::filter_world",
        pub_export_macro: true,
    });
}

/// Bindings of the `transform` world: `Guest` with `init` and `transform`, and the `host` import.
pub mod transform_world {
    wit_bindgen::generate!({
        world: "transform",
        path: "../wit",
        default_bindings_module: "quiver_sdk_guest::bindings::transform_world",
        pub_export_macro: true,
    });
}

/// Bindings of the `router` world: `Guest` with `init` and `route`, and the `host` import.
pub mod router_world {
    wit_bindgen::generate!({
        world: "router",
        path: "../wit",
        default_bindings_module: "quiver_sdk_guest::bindings::router_world",
        pub_export_macro: true,
    });
}

/// Bindings of the `scheduler` world: `Guest` with `init` and `schedule`, and the `host` import.
pub mod scheduler_world {
    wit_bindgen::generate!({
        world: "scheduler",
        path: "../wit",
        default_bindings_module: "quiver_sdk_guest::bindings::scheduler_world",
        pub_export_macro: true,
    });
}

/// The SDK's plain `Routes` becomes the generated `types.routes` only here, at the component
/// boundary, so native code never depends on wit-bindgen. The lists move; nothing is copied.
impl From<crate::Routes> for router_world::Routes {
    fn from(routes: crate::Routes) -> router_world::Routes {
        router_world::Routes {
            topics: routes.topics,
            counts: routes.counts,
            targets: routes.targets,
        }
    }
}
