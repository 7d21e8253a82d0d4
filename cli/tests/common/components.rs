//! Components built in the test from WIT text, for the mistakes a plugin author makes: a world
//! without `init`, one built against another version of the quiver:plugin WIT, one that traps on
//! its first batch. The core module is written with wasm-encoder (each export returns a pointer to
//! zeroed memory, which the canonical ABI reads as `ok`, or traps), then wrapped as a component
//! with the WIT embedded, as `cargo build --target wasm32-wasip2` does.

use wasm_encoder::{
    CodeSection, EntityType, ExportKind, ExportSection, Function, FunctionSection, ImportSection,
    Instruction, MemorySection, MemoryType, Module, TypeSection, ValType,
};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::Resolve;

/// What an exported function does when called.
#[derive(Clone, Copy)]
pub enum Body {
    /// Returns a pointer to zeroed memory: `Ok` of a `result` (an empty list for `ok` payloads).
    Ok,
    /// Traps (`unreachable`), as a panicking plugin does.
    Trap,
}

/// A component of `world` in `wit` whose core module exports `exports` (each taking a list, i.e.
/// `(ptr, len) -> ptr`, as every quiver:plugin function does) and imports `imports`
/// (`(module, name)` of functions `() -> i64`, as `now-ms`).
pub fn component(
    wit: &str,
    world: &str,
    exports: &[(&str, Body)],
    imports: &[(&str, &str)],
) -> Vec<u8> {
    let mut resolve = Resolve::default();
    let pkg = resolve.push_str("plugin.wit", wit).unwrap();
    let world = resolve.select_world(&[pkg], Some(world)).unwrap();
    let mut module = core_module(exports, imports);
    wit_component::embed_component_metadata(&mut module, &resolve, world, StringEncoding::UTF8)
        .unwrap();
    ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

fn core_module(exports: &[(&str, Body)], imports: &[(&str, &str)]) -> Vec<u8> {
    let mut types = TypeSection::new();
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]);
    types.ty().function([ValType::I32; 4], [ValType::I32]);
    types.ty().function([], [ValType::I64]);
    let mut import_section = ImportSection::new();
    for (module, name) in imports {
        import_section.import(module, name, EntityType::Function(2));
    }
    let first = imports.len() as u32;
    let mut funcs = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut export_section = ExportSection::new();
    for (i, (name, body)) in exports.iter().enumerate() {
        funcs.function(0);
        code.function(&body_of(*body));
        export_section.export(name, ExportKind::Func, first + i as u32);
    }
    // cabi_realloc: always hands out memory at 2048 (what the host copies in is never read).
    funcs.function(1);
    let mut realloc = Function::new([]);
    realloc.instruction(&Instruction::I32Const(2048));
    realloc.instruction(&Instruction::End);
    code.function(&realloc);
    export_section.export(
        "cabi_realloc",
        ExportKind::Func,
        first + exports.len() as u32,
    );
    let mut memory = MemorySection::new();
    memory.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    export_section.export("memory", ExportKind::Memory, 0);
    let mut module = Module::new();
    module
        .section(&types)
        .section(&import_section)
        .section(&funcs)
        .section(&memory)
        .section(&export_section)
        .section(&code);
    module.finish()
}

fn body_of(body: Body) -> Function {
    let mut f = Function::new([]);
    match body {
        // Zeroed memory at 64: a result discriminant 0 (ok), an empty list.
        Body::Ok => f.instruction(&Instruction::I32Const(64)),
        Body::Trap => f.instruction(&Instruction::Unreachable),
    };
    f.instruction(&Instruction::End);
    f
}
