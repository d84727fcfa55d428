//! The runner's JUnit XML validated against the JUnit schema (`junit-10.xsd` beside
//! this file: the Jenkins/Ant shape that CI test reporters read).
//!
//! No maintained pure-Rust XSD validator exists on crates.io (the usable ones bind
//! libxml2, a system library this crate does not otherwise need), so this test reads
//! the schema's rules from the fixture itself and checks them structurally: the root
//! is a declared element; each element's attributes are declared, the required ones
//! present, integers and decimals well formed; its children follow its content model
//! (a sequence of element references and choices, with their occurrence bounds); text
//! appears only in mixed or simple content; and the counts add up (a suite's `tests`
//! is its testcases, `failures`, `errors` and `skipped` the testcases holding each,
//! and the root's totals the suites' sums).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use distsync_conformance::matrix::RunInfo;
use distsync_conformance::{find, junit, Outcome, Profile, Report};

/// A parsed XML element.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attributes: Vec<(String, String)>,
    children: Vec<Element>,
    /// Whether non-whitespace text appears directly inside.
    text: bool,
}

impl Element {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// A small XML parser: elements, attributes, text, comments, the declaration.
fn parse(xml: &str) -> Result<Element, String> {
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = xml;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            rest = &after[after.find("?>").ok_or("unclosed <?")? + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            rest = &after[after.find("-->").ok_or("unclosed comment")? + 3..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("unclosed end tag")?;
            let name = after[..end].trim();
            let done = stack.pop().ok_or("stack underflow")?;
            if done.name != name {
                return Err(format!("</{name}> closes <{}>", done.name));
            }
            stack
                .last_mut()
                .ok_or("end tag without parent")?
                .children
                .push(done);
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').ok_or("unclosed tag")?;
            let (body, empty) = match after[..end].strip_suffix('/') {
                Some(body) => (body, true),
                None => (&after[..end], false),
            };
            let element = start_tag(body)?;
            if empty {
                stack.last_mut().ok_or("no parent")?.children.push(element);
            } else {
                stack.push(element);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            if !rest[..end].trim().is_empty() {
                if rest[..end].contains(['<', '>']) {
                    return Err("a raw angle bracket in text".into());
                }
                stack.last_mut().ok_or("no parent")?.text = true;
            }
            rest = &rest[end..];
        }
    }
    let mut document = stack.pop().ok_or("empty")?;
    if !stack.is_empty() {
        return Err(format!("<{}> is not closed", document.name));
    }
    if document.children.len() != 1 || document.text {
        return Err("a document has exactly one root element".into());
    }
    Ok(document.children.remove(0))
}

fn start_tag(body: &str) -> Result<Element, String> {
    let body = body.trim();
    let split = body.find(char::is_whitespace).unwrap_or(body.len());
    let mut element = Element {
        name: body[..split].to_owned(),
        ..Element::default()
    };
    let mut rest = body[split..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("attribute without value in <{body}>"))?;
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().ok_or("missing quote")?;
        if quote != '"' && quote != '\'' {
            return Err(format!("unquoted attribute {key} in <{body}>"));
        }
        let close = after[1..].find(quote).ok_or("unclosed attribute")? + 1;
        let value = &after[1..close];
        if value.contains('<') {
            return Err(format!("`<` in attribute {key}"));
        }
        if element.attributes.iter().any(|(seen, _)| *seen == key) {
            return Err(format!("attribute {key} twice in <{}>", element.name));
        }
        element.attributes.push((key, value.to_owned()));
        rest = after[close + 1..].trim_start();
    }
    Ok(element)
}

/// One particle of a content model: element names (one, or several for a choice) and
/// occurrence bounds.
#[derive(Debug)]
struct Particle {
    names: Vec<String>,
    min: usize,
    max: usize,
}

/// What the schema says of one element.
#[derive(Debug, Default)]
struct Declaration {
    attributes: HashMap<String, (String, bool)>,
    content: Vec<Particle>,
    /// Mixed or simple content: text allowed.
    text: bool,
}

fn occurs(element: &Element, attribute: &str) -> usize {
    match element.attribute(attribute) {
        Some("unbounded") => usize::MAX,
        Some(n) => n.parse().expect("an occurrence bound"),
        None => 1,
    }
}

/// The schema's top-level element declarations.
fn schema() -> HashMap<String, Declaration> {
    let xsd = include_str!("junit-10.xsd");
    let root = parse(xsd).expect("the fixture parses");
    assert_eq!(root.name, "xs:schema");
    let mut declarations = HashMap::new();
    for element in root
        .children
        .iter()
        .filter(|child| child.name == "xs:element")
    {
        let name = element
            .attribute("name")
            .expect("a named element")
            .to_owned();
        let mut declaration = Declaration {
            text: element.attribute("type") == Some("xs:string"),
            ..Declaration::default()
        };
        if let Some(complex) = element.children.iter().find(|c| c.name == "xs:complexType") {
            declaration.text = complex.attribute("mixed") == Some("true");
            for part in &complex.children {
                match part.name.as_str() {
                    "xs:attribute" => {
                        declaration.attributes.insert(
                            part.attribute("name").expect("named").to_owned(),
                            (
                                part.attribute("type").unwrap_or("xs:string").to_owned(),
                                part.attribute("use") == Some("required"),
                            ),
                        );
                    }
                    "xs:sequence" => {
                        for particle in &part.children {
                            let names = match particle.name.as_str() {
                                "xs:element" => vec![particle.attribute("ref").expect("ref")],
                                "xs:choice" => particle
                                    .children
                                    .iter()
                                    .map(|c| c.attribute("ref").expect("ref"))
                                    .collect(),
                                other => panic!("unexpected {other} in a sequence"),
                            };
                            declaration.content.push(Particle {
                                names: names.into_iter().map(str::to_owned).collect(),
                                min: occurs(particle, "minOccurs"),
                                max: occurs(particle, "maxOccurs"),
                            });
                        }
                    }
                    other => panic!("unexpected {other} in a complex type"),
                }
            }
        }
        declarations.insert(name, declaration);
    }
    declarations
}

/// Checks `element` and its descendants against the declarations.
fn validate(
    element: &Element,
    schema: &HashMap<String, Declaration>,
    path: &str,
) -> Result<(), String> {
    let path = format!("{path}/{}", element.name);
    let declaration = schema
        .get(&element.name)
        .ok_or_else(|| format!("{path}: undeclared element"))?;
    for (name, value) in &element.attributes {
        let (kind, _) = declaration
            .attributes
            .get(name)
            .ok_or_else(|| format!("{path}: undeclared attribute {name}"))?;
        let valid = match kind.as_str() {
            "xs:nonNegativeInteger" => {
                !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
            }
            "xs:decimal" => {
                value.parse::<f64>().is_ok_and(f64::is_finite) && !value.contains(['e', 'E'])
            }
            _ => true,
        };
        if !valid {
            return Err(format!("{path}: {name}={value:?} is no {kind}"));
        }
    }
    for (name, (_, required)) in &declaration.attributes {
        if *required && element.attribute(name).is_none() {
            return Err(format!("{path}: required attribute {name} missing"));
        }
    }
    if element.text && !declaration.text {
        return Err(format!("{path}: text in element-only content"));
    }
    // The children against the sequence, greedily (the model is deterministic).
    let mut children = element.children.iter().peekable();
    for particle in &declaration.content {
        let mut seen = 0;
        while seen < particle.max {
            match children.peek() {
                Some(child) if particle.names.contains(&child.name) => {
                    seen += 1;
                    children.next();
                }
                _ => break,
            }
        }
        if seen < particle.min {
            return Err(format!(
                "{path}: expected {:?} at least {} times",
                particle.names, particle.min
            ));
        }
    }
    if let Some(extra) = children.next() {
        return Err(format!("{path}: <{}> not allowed here", extra.name));
    }
    for child in &element.children {
        validate(child, schema, &path)?;
    }
    Ok(())
}

/// The counts of a suite (or of all suites) add up.
fn counts_add_up(root: &Element) -> Result<(), String> {
    let number = |element: &Element, name: &str| -> usize {
        element
            .attribute(name)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let holding = |cases: &[&Element], what: &str| {
        cases
            .iter()
            .filter(|case| case.children.iter().any(|c| c.name == what))
            .count()
    };
    let mut totals = [0_usize; 4];
    for suite in &root.children {
        let cases: Vec<&Element> = suite
            .children
            .iter()
            .filter(|c| c.name == "testcase")
            .collect();
        let found = [
            cases.len(),
            holding(&cases, "failure"),
            holding(&cases, "error"),
            holding(&cases, "skipped"),
        ];
        for (i, name) in ["tests", "failures", "errors", "skipped"]
            .iter()
            .enumerate()
        {
            if number(suite, name) != found[i] {
                return Err(format!(
                    "testsuite {:?}: {name}={} but {} found",
                    suite.attribute("name"),
                    number(suite, name),
                    found[i]
                ));
            }
            totals[i] += found[i];
        }
    }
    for (i, name) in ["tests", "failures", "errors", "skipped"]
        .iter()
        .enumerate()
    {
        if root.attribute(name).is_some() && number(root, name) != totals[i] {
            return Err(format!(
                "testsuites: {name}={} but the suites add up to {}",
                number(root, name),
                totals[i]
            ));
        }
    }
    Ok(())
}

fn check(xml: &str) {
    let schema = schema();
    let root = parse(xml).unwrap_or_else(|error| panic!("{error}:\n{xml}"));
    assert_eq!(root.name, "testsuites", "{xml}");
    validate(&root, &schema, "").unwrap_or_else(|error| panic!("{error}:\n{xml}"));
    counts_add_up(&root).unwrap_or_else(|error| panic!("{error}:\n{xml}"));
}

#[test]
fn the_validator_rejects_what_the_schema_forbids() {
    let schema = schema();
    let good = concat!(
        r#"<testsuites>"#,
        r#"<testsuite name="m" tests="1" failures="0" errors="0" skipped="0" time="0.1">"#,
        r#"<testcase name="a" classname="m" time="0.1"/></testsuite></testsuites>"#,
    );
    let root = parse(good).unwrap();
    assert_eq!(validate(&root, &schema, ""), Ok(()));
    assert_eq!(counts_add_up(&root), Ok(()));
    for bad in [
        // A testcase without its classname.
        concat!(
            r#"<testsuites>"#,
            r#"<testsuite name="m" tests="1" failures="0" errors="0" skipped="0" time="0">"#,
            r#"<testcase name="a" time="0"/></testsuite></testsuites>"#,
        ),
        // A failure and a skipped in one testcase.
        concat!(
            r#"<testsuites>"#,
            r#"<testsuite name="m" tests="1" failures="1" errors="0" skipped="1" time="0">"#,
            r#"<testcase name="a" classname="m" time="0"><failure/><skipped/>"#,
            r#"</testcase></testsuite></testsuites>"#,
        ),
        // A count that is no integer.
        concat!(
            r#"<testsuites>"#,
            r#"<testsuite name="m" tests="x" failures="0" errors="0" skipped="0" time="0"/>"#,
            r#"</testsuites>"#,
        ),
        // An undeclared element.
        r#"<testsuites><suite/></testsuites>"#,
    ] {
        let root = parse(bad).unwrap();
        assert!(validate(&root, &schema, "").is_err(), "{bad}");
    }
    let miscounted = concat!(
        r#"<testsuites tests="2">"#,
        r#"<testsuite name="m" tests="1" failures="0" errors="0" skipped="0" time="0">"#,
        r#"<testcase name="a" classname="m" time="0"/></testsuite></testsuites>"#,
    );
    assert!(counts_add_up(&parse(miscounted).unwrap()).is_err());
    assert!(parse("<a><b></a></b>").is_err());
}

#[test]
fn every_outcome_renders_as_valid_junit() {
    let case = |id: &str| find(id).expect("a case of the suite");
    let report = |backend: &str, id: &str, declared, outcome| Report {
        backend: backend.to_owned(),
        case: case(id),
        declared,
        outcome,
        elapsed: Duration::from_millis(1234),
        tightest: Some(distsync_conformance::slack::Tightest {
            what: "waiting for <the grant> & more".to_owned(),
            took: Duration::from_millis(900),
            bound: Duration::from_secs(5),
        }),
    };
    let reports = vec![
        report(
            "memory",
            "lock_mutual_exclusion",
            Some(true),
            Outcome::holds("1 holder <at> a time & \"no\" more"),
        ),
        report(
            "memory",
            "lock_fencing_tokens",
            Some(true),
            Outcome::Violated {
                evidence: "tokens 3 < 2".into(),
            },
        ),
        report(
            "memory",
            "lock_try_lock",
            None,
            Outcome::Error {
                message: "not finished".into(),
            },
        ),
        report(
            "redis",
            "server_restart_durable_state",
            Some(false),
            Outcome::NotRun {
                reason: "not run in the safe profile".into(),
            },
        ),
    ];
    let info = RunInfo {
        profile: Profile::Safe,
        namespace: Some("conf/run-x".into()),
        notes: vec![(
            "memory".into(),
            "clean-up: 2 entries removed, 0 left".into(),
        )],
        ..RunInfo::default()
    };
    check(&junit::junit(&reports, &info));
    check(&junit::junit(&[], &RunInfo::default()));
}

#[test]
fn the_runner_writes_valid_junit() {
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_distsync-conformance"))
            .args([
                "--backend",
                "memory://",
                "--profile",
                "safe",
                "--format",
                "junit",
            ])
            .args(extra)
            .output()
            .expect("running the runner")
    };
    let passed = run(&["--case", "lock_", "--case", "server_restart"]);
    let stderr = String::from_utf8_lossy(&passed.stderr);
    assert_eq!(passed.status.code(), Some(0), "{stderr}");
    let xml = String::from_utf8(passed.stdout).expect("UTF-8");
    assert!(xml.contains("<skipped"), "{xml}");
    check(&xml);
    // A whole-run timeout: the unfinished cases are errors, and the exit status is 4.
    let timed_out = run(&["--case", "queue_", "--timeout", "1ms"]);
    assert_eq!(timed_out.status.code(), Some(4));
    let xml = String::from_utf8(timed_out.stdout).expect("UTF-8");
    assert!(xml.contains("<error"), "{xml}");
    check(&xml);
}
