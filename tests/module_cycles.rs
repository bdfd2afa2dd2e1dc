//! No import circles under `src/`: the library's modules, with the dependencies their `use`
//! declarations and `crate::` / `super::` / `self::` paths name, form no cycle.
//!
//! A module is a file (or an inline `mod x { … }`). A module may use its ancestors and its
//! descendants freely (a parent declares its children; a child reaches shared items through
//! `super::`): those edges stay inside one room and are not counted. Every other edge is, and
//! the graph of them must be acyclic, so that each module can be read, moved and tested with only
//! what it depends on. Test code (`#[cfg(test)]` items and modules, whether inline or in their
//! own file) and comments are left out: a test may reach anywhere, a doc link is not a
//! dependency. The binaries (`src/main.rs`, `src/bin/`) are crates of their own and use the
//! library from outside.
//!
//! `scripts/test` runs this with every other test; alone it is `cargo test --test module_cycles`
//! (no Go, about a second once built).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// A module path below the crate root (`["serve", "conn"]`); empty for the root.
type Module = Vec<String>;

/// A dependency of one module on another, with where it was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edge {
    from: Module,
    to: Module,
    at: String,
}

fn show(m: &[String]) -> String {
    if m.is_empty() { "crate".to_owned() } else { m.join("::") }
}

/// `src/serve/conn.rs` → `serve::conn`, `src/serve/mod.rs` → `serve`, `src/lib.rs` → the root.
fn module_of(relative: &Path) -> Module {
    let mut parts: Vec<String> =
        relative.iter().map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source with comments and the contents of string and character literals blanked out
/// (newlines kept, so byte offsets still give line numbers).
fn code_only(source: &str) -> String {
    let s: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(s[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && next == Some('r')))
            && !s[..i].last().is_some_and(|p| p.is_alphanumeric() || *p == '_')
            && raw_string_start(&s[i..]).is_some()
        {
            let (prefix, hashes) = raw_string_start(&s[i..]).expect("checked");
            out.extend(std::iter::repeat_n(' ', prefix));
            i += prefix;
            let closing: Vec<char> = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            while i < s.len() && !s[i..].starts_with(&closing) {
                out.push(blank(s[i]));
                i += 1;
            }
            out.extend(std::iter::repeat_n(' ', closing.len()));
            i += closing.len();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < s.len() && s[i] != '"' {
                if s[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < s.len() {
                    out.push(blank(s[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\u{1b}'); a lifetime ('a) has no closing quote.
            out.push(' ');
            i += 1;
            while i < s.len() && s[i] != '\'' {
                if s[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`…: the length of the opening and the number of `#`.
fn raw_string_start(s: &[char]) -> Option<(usize, usize)> {
    let mut i = usize::from(s.first() == Some(&'b'));
    (s.get(i) == Some(&'r')).then_some(())?;
    i += 1;
    let hashes = s[i..].iter().take_while(|c| **c == '#').count();
    i += hashes;
    (s.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Punct(char),
    /// `::`
    Path,
}

/// Words, `::` and single punctuation, each with its byte offset.
fn tokens(code: &str) -> Vec<(usize, Token)> {
    let mut out = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = String::from(c);
            while let Some(&(_, n)) = chars.peek() {
                if !(n.is_alphanumeric() || n == '_') {
                    break;
                }
                word.push(n);
                chars.next();
            }
            out.push((at, Token::Word(word)));
        } else if c == ':' && chars.peek().map(|p| p.1) == Some(':') {
            chars.next();
            out.push((at, Token::Path));
        } else if !c.is_whitespace() {
            out.push((at, Token::Punct(c)));
        }
    }
    out
}

/// What one file says: the paths it names (in code that is not test code), each with its line
/// and the inline module it sits in, and the child modules it declares for tests only.
#[derive(Debug, Default)]
struct Scanned {
    paths: Vec<(usize, Vec<String>, Vec<String>)>,
    test_children: Vec<String>,
    inline_modules: Vec<Vec<String>>,
}

fn scan(source: &str) -> Scanned {
    let code = code_only(source);
    let newlines: Vec<usize> = code.match_indices('\n').map(|(at, _)| at).collect();
    let line_of = |at: usize| newlines.partition_point(|&n| n < at) + 1;
    let toks = tokens(&code);
    let mut scanned = Scanned::default();
    // Inline modules open at a brace depth: (name, depth of their `{`).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let word = |i: usize| match toks.get(i) {
        Some((_, Token::Word(w))) => Some(w.as_str()),
        _ => None,
    };
    let punct = |i: usize, c: char| matches!(toks.get(i), Some((_, Token::Punct(p))) if *p == c);
    while i < toks.len() {
        if punct(i, '#') && is_cfg_test(&toks, i) {
            // Skip the attribute(s), then the item they gate.
            let mut j = i;
            while punct(j, '#') {
                j = skip_group(&toks, j + 1);
            }
            let mut k = j;
            while matches!(word(k), Some("pub" | "crate")) || punct(k, '(') {
                k = if punct(k, '(') { skip_group(&toks, k) } else { k + 1 };
            }
            if word(k) == Some("mod")
                && punct(k + 2, ';')
                && let Some(name) = word(k + 1)
            {
                scanned.test_children.push(name.to_owned());
            }
            i = skip_item(&toks, j);
            continue;
        }
        match &toks[i].1 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Word(w) if w == "mod" && punct(i + 2, '{') => {
                if let Some(name) = word(i + 1) {
                    inline.push((name.to_owned(), depth));
                    let here: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                    scanned.inline_modules.push(here);
                }
                depth += 1;
                i += 3;
                continue;
            }
            Token::Word(w) if w == "use" => {
                let end = (i..toks.len()).find(|&j| punct(j, ';')).unwrap_or(toks.len());
                let within: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                for path in use_tree(&toks[i + 1..end]) {
                    scanned.paths.push((line_of(toks[i].0), within.clone(), path));
                }
                i = end + 1;
                continue;
            }
            Token::Word(w)
                if matches!(w.as_str(), "crate" | "super" | "self")
                    && toks.get(i + 1).map(|t| &t.1) == Some(&Token::Path) =>
            {
                let mut path = vec![w.clone()];
                let mut j = i + 1;
                while toks.get(j).map(|t| &t.1) == Some(&Token::Path) {
                    match word(j + 1) {
                        Some(next) => path.push(next.to_owned()),
                        None => break,
                    }
                    j += 2;
                }
                let within: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
                scanned.paths.push((line_of(toks[i].0), within, path));
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scanned
}

/// Whether the attribute at `#` is `#[cfg(test)]` (or `#[cfg(all(test, …))]`).
fn is_cfg_test(toks: &[(usize, Token)], hash: usize) -> bool {
    let end = skip_group(toks, hash + 1);
    let inner: Vec<&Token> = toks[hash + 1..end].iter().map(|t| &t.1).collect();
    matches!(inner.get(1), Some(Token::Word(w)) if w == "cfg")
        && inner.iter().any(|t| matches!(t, Token::Word(w) if w == "test"))
        && !inner.iter().any(|t| matches!(t, Token::Word(w) if w == "not"))
}

/// The index after the bracketed group that opens at `open` (`[`, `(` or `{`).
fn skip_group(toks: &[(usize, Token)], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, (_, t)) in toks.iter().enumerate().skip(open) {
        match t {
            Token::Punct('[' | '(' | '{') => depth += 1,
            Token::Punct(']' | ')' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The index after the item starting at `start`: through its `;`, or its first `{ … }` block.
fn skip_item(toks: &[(usize, Token)], start: usize) -> usize {
    let mut i = start;
    while i < toks.len() {
        match toks[i].1 {
            Token::Punct(';') => return i + 1,
            Token::Punct('{') => return skip_group(toks, i),
            Token::Punct('(' | '[') => i = skip_group(toks, i),
            _ => i += 1,
        }
    }
    i
}

/// The paths a `use` tree names (`a::{b, c::{d as e, self}}` → `a::b`, `a::c::d`, `a::c`).
fn use_tree(toks: &[(usize, Token)]) -> Vec<Vec<String>> {
    fn walk(toks: &[(usize, Token)], prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i].1 {
                Token::Word(w) if w == "as" => {
                    i += 2;
                    continue;
                }
                Token::Word(w) if w == "self" && !path.is_empty() => {}
                Token::Word(w) => path.push(w.clone()),
                Token::Path => {}
                Token::Punct('{') => {
                    let end = skip_group(toks, i) - 1;
                    // Split the group at its top-level commas.
                    let mut depth = 0;
                    let mut from = i + 1;
                    for j in i + 1..=end {
                        match toks[j].1 {
                            Token::Punct('{') => depth += 1,
                            Token::Punct('}') if depth > 0 => depth -= 1,
                            Token::Punct(',') | Token::Punct('}') if depth == 0 => {
                                if from < j {
                                    walk(&toks[from..j], &path, out);
                                }
                                from = j + 1;
                            }
                            _ => {}
                        }
                    }
                    return;
                }
                Token::Punct('*') => {}
                Token::Punct(_) => {}
            }
            i += 1;
        }
        out.push(path);
    }
    let mut out = Vec::new();
    walk(toks, &[], &mut out);
    out
}

/// The module graph of a crate given as `(module, source)` pairs.
fn edges(files: &[(Module, String)]) -> Vec<Edge> {
    let mut scanned: Vec<(Module, Scanned)> = files.iter().map(|(m, s)| (m.clone(), scan(s))).collect();
    // Modules declared for tests only, with everything below them.
    let test_only: Vec<Module> = scanned
        .iter()
        .flat_map(|(m, s)| s.test_children.iter().map(move |c| [m.clone(), vec![c.clone()]].concat()))
        .collect();
    scanned.retain(|(m, _)| !test_only.iter().any(|t| m.starts_with(t)));
    let mut known: BTreeSet<Module> = scanned.iter().map(|(m, _)| m.clone()).collect();
    for (m, s) in &scanned {
        for inline in &s.inline_modules {
            known.insert([m.clone(), inline.clone()].concat());
        }
    }
    let mut out: Vec<Edge> = Vec::new();
    for (file_module, s) in &scanned {
        for (line, inline, path) in &s.paths {
            let from = [file_module.clone(), inline.clone()].concat();
            let Some(to) = resolve(&from, path, &known) else { continue };
            let related = to.starts_with(&from) || from.starts_with(&to);
            if related || out.iter().any(|e| e.from == from && e.to == to) {
                continue;
            }
            out.push(Edge { from, to, at: format!("line {line}: {}", path.join("::")) });
        }
    }
    out
}

/// The module `path` (named in module `from`) points into: the longest known module it starts
/// with. None for other crates.
fn resolve(from: &[String], path: &[String], known: &BTreeSet<Module>) -> Option<Module> {
    let mut at: Module = from.to_vec();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            at.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        // Relative to this module: a child module (edition 2018 paths); else another crate.
        Some(first) if known.contains(&[from.to_vec(), vec![first.to_owned()]].concat()) => {}
        _ => return None,
    }
    let mut found = at.clone();
    for segment in rest {
        at.push(segment.clone());
        if known.contains(&at) {
            found = at.clone();
        } else {
            break;
        }
    }
    Some(found)
}

/// The strongly connected components with more than one module (Tarjan).
fn cycles(edges: &[Edge]) -> Vec<Vec<Module>> {
    let nodes: BTreeSet<&Module> = edges.iter().flat_map(|e| [&e.from, &e.to]).collect();
    let index_of: BTreeMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
    let nodes: Vec<&Module> = nodes.into_iter().collect();
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for e in edges {
        next[index_of[&e.from]].push(index_of[&e.to]);
    }
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let n = nodes.len();
    let mut t = Tarjan {
        next: &next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.found
        .into_iter()
        .map(|c| {
            let mut c: Vec<Module> = c.into_iter().map(|i| nodes[i].clone()).collect();
            c.sort();
            c
        })
        .collect()
}

/// Every library source file under `dir` (not the binaries), with its module.
fn library_files(src: &Path) -> Vec<(Module, String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(src).expect("under src/").to_path_buf();
            if relative == Path::new("main.rs") || relative.starts_with("bin") {
                return None;
            }
            let source = std::fs::read_to_string(&path).expect("read a source file");
            Some((module_of(&relative), source, relative))
        })
        .collect()
}

#[test]
fn the_library_has_no_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = library_files(&src);
    assert!(files.len() > 20, "found only {} source files under {}", files.len(), src.display());
    let pairs: Vec<(Module, String)> = files.iter().map(|(m, s, _)| (m.clone(), s.clone())).collect();
    let edges = edges(&pairs);
    assert!(edges.len() > 50, "found only {} module dependencies: is the scanner broken?", edges.len());
    let found = cycles(&edges);
    let mut report = String::new();
    for component in &found {
        report.push_str(&format!(
            "\ncycle among {}:\n",
            component.iter().map(|m| show(m)).collect::<Vec<_>>().join(", ")
        ));
        for e in edges.iter().filter(|e| component.contains(&e.from) && component.contains(&e.to)) {
            let file = files.iter().filter(|(m, _, _)| e.from.starts_with(m)).max_by_key(|(m, _, _)| m.len());
            let file = file.map(|f| f.2.display().to_string()).unwrap_or_default();
            report.push_str(&format!("  {} -> {}  (src/{file}, {})\n", show(&e.from), show(&e.to), e.at));
        }
    }
    assert!(found.is_empty(), "import circles under src/:{report}");
}

#[cfg(test)]
mod checker {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> Vec<(Module, String)> {
        files.iter().map(|(path, source)| (module_of(Path::new(path)), source.to_string())).collect()
    }

    fn cycle_names(files: &[(&str, &str)]) -> Vec<Vec<String>> {
        cycles(&edges(&crate_of(files))).into_iter().map(|c| c.iter().map(|m| show(m)).collect()).collect()
    }

    #[test]
    fn a_circle_between_siblings_is_found() {
        let files = [
            ("lib.rs", "pub mod a;"),
            ("a/mod.rs", "pub mod b; pub mod c;"),
            ("a/b.rs", "use super::c::Thing;"),
            ("a/c.rs", "pub fn f() { crate::a::b::g() }"),
        ];
        assert_eq!(cycle_names(&files), vec![vec!["a::b".to_owned(), "a::c".to_owned()]]);
    }

    #[test]
    fn a_circle_through_a_nested_use_group_is_found() {
        let files = [
            ("lib.rs", "pub mod x; pub mod y; pub mod z;"),
            ("x.rs", "use crate::{y::{self as why, Other}, w};"),
            ("y.rs", "use super::z;"),
            ("z.rs", "fn f() -> crate::x::T { todo!() }"),
        ];
        assert_eq!(cycle_names(&files), vec![vec!["x".to_owned(), "y".to_owned(), "z".to_owned()]]);
    }

    #[test]
    fn parents_children_tests_comments_and_strings_make_no_circle() {
        let files = [
            ("lib.rs", "pub mod a; pub mod b;"),
            ("a/mod.rs", "pub mod k; use k::K; pub struct App;\n#[cfg(test)]\nmod helper;"),
            ("a/k.rs", "use super::App; // crate::b::x\n/* crate::b */ const S: &str = \"crate::b::y\";"),
            ("a/helper.rs", "use crate::b;"),
            ("b.rs", "use crate::a::{k::K, helper};\n#[cfg(test)]\nmod tests { use crate::a::k; }"),
        ];
        assert_eq!(cycle_names(&files), Vec::<Vec<String>>::new());
        // The same helper, not declared for tests only, closes a circle.
        let mut files = files;
        files[1].1 = "pub mod k; pub mod helper;";
        assert_eq!(cycle_names(&files), vec![vec!["a::helper".to_owned(), "b".to_owned()]]);
    }

    #[test]
    fn a_path_after_a_character_literal_counts() {
        let files = [
            ("lib.rs", "pub mod a; pub mod b;"),
            ("a.rs", "fn f<'x>(s: &'x str) -> bool { s.starts_with('\"') && crate::b::g() }"),
            ("b.rs", "fn g() -> char { '\\'' }\nuse crate::a::f;"),
        ];
        assert_eq!(cycle_names(&files), vec![vec!["a".to_owned(), "b".to_owned()]]);
    }
}
