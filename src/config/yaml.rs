//! routes.yaml read into marked nodes (every value knows its line and column), as marked-yaml
//! reads it, plus what marked-yaml refuses and people write: anchors and aliases (`&ui` …
//! `*ui`, a `body_replace` list repeated per listener) and merge keys (`<<: *defaults`, YAML
//! 1.1's, which every YAML tool in Kubernetes takes). The events come from yaml-rust2, the
//! parser marked-yaml itself is built on; tags stay refused, keys stay scalars, and a key given
//! twice in one mapping is an error (a merged key never is: the mapping's own wins).

use std::collections::HashMap;

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoadError, Marker, Node, Span};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker as YamlMarker, TScalarStyle};

struct Events(Vec<(Event, Marker)>);

fn marker(m: YamlMarker) -> Marker {
    Marker::new(0, m.index(), m.line(), m.col() + 1)
}

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: YamlMarker) {
        self.0.push((ev, marker(mark)));
    }
}

/// Parses one YAML document whose top level is a mapping.
pub fn parse(text: &str) -> Result<Node, LoadError> {
    let mut events = Events(Vec::new());
    Parser::new_from_str(text).load(&mut events, false).map_err(|e| LoadError::ScanError(marker(*e.marker()), e))?;
    let mut b = Builder { events: events.0, at: 0, anchors: HashMap::new(), expanded: 0 };
    // StreamStart, DocumentStart (absent for an empty stream).
    while matches!(b.peek(), Some(Event::StreamStart | Event::DocumentStart)) {
        b.at += 1;
    }
    let Some((ev, mark)) = b.events.get(b.at) else {
        let m = Marker::new(0, 0, 1, 1);
        return Ok(Node::from(MarkedMappingNode::new_empty(Span::new_with_marks(m, m))));
    };
    match ev {
        Event::MappingStart(..) => b.node(),
        Event::StreamEnd => Ok(Node::from(MarkedMappingNode::new_empty(Span::new_with_marks(*mark, *mark)))),
        _ => Err(LoadError::TopLevelMustBeMapping(*mark)),
    }
}

struct Builder {
    events: Vec<(Event, Marker)>,
    at: usize,
    /// Anchor id → the node it names, as built, and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    /// Nodes copied by aliases so far (bounded: nested aliases grow exponentially).
    expanded: usize,
}

/// The most nodes aliases may copy in one document.
const MAX_EXPANDED: usize = 100_000;

fn size(n: &Node) -> usize {
    match n {
        Node::Scalar(_) => 1,
        Node::Sequence(l) => 1 + l.iter().map(size).sum::<usize>(),
        Node::Mapping(m) => 1 + m.iter().map(|(_, v)| 1 + size(v)).sum::<usize>(),
    }
}

impl Builder {
    fn peek(&self) -> Option<&Event> {
        self.events.get(self.at).map(|(e, _)| e)
    }

    fn anchor(&mut self, id: usize, node: &Node) {
        if id != 0 {
            self.anchors.insert(id, (node.clone(), size(node)));
        }
    }

    /// The node starting at the current event.
    fn node(&mut self) -> Result<Node, LoadError> {
        let (ev, mark) = self.events.get(self.at).cloned().expect("the parser balances its events");
        self.at += 1;
        match ev {
            // An alias inside the node its anchor names (not yet built), or one that would copy
            // more than MAX_EXPANDED nodes, is refused as an anchor ferry cannot take.
            Event::Alias(id) => match self.anchors.get(&id) {
                Some((node, n)) if self.expanded + n <= MAX_EXPANDED => {
                    self.expanded += n;
                    Ok(node.clone())
                }
                _ => Err(LoadError::UnexpectedAnchor(mark)),
            },
            Event::Scalar(value, style, id, tag) => {
                if tag.is_some() {
                    return Err(LoadError::UnexpectedTag(mark));
                }
                let mut s = MarkedScalarNode::new(Span::new_start(mark), value);
                s.set_coerce(matches!(style, TScalarStyle::Plain));
                let node = Node::from(s);
                self.anchor(id, &node);
                Ok(node)
            }
            Event::SequenceStart(id, tag) => {
                if tag.is_some() {
                    return Err(LoadError::UnexpectedTag(mark));
                }
                let mut list = Vec::new();
                while !matches!(self.peek(), Some(Event::SequenceEnd)) {
                    list.push(self.node()?);
                }
                let end = self.events[self.at].1;
                self.at += 1;
                let node = Node::from(MarkedSequenceNode::new(Span::new_with_marks(mark, end), list));
                self.anchor(id, &node);
                Ok(node)
            }
            Event::MappingStart(id, tag) => {
                if tag.is_some() {
                    return Err(LoadError::UnexpectedTag(mark));
                }
                let mut map = MarkedMappingNode::new_empty(Span::new_start(mark));
                let mut merged: Vec<MarkedMappingNode> = Vec::new();
                while !matches!(self.peek(), Some(Event::MappingEnd)) {
                    let key_mark = self.events[self.at].1;
                    let key = match self.node()? {
                        Node::Scalar(k) => k,
                        _ => return Err(LoadError::MappingKeyMustBeScalar(key_mark)),
                    };
                    let value = self.node()?;
                    if key.as_str() == "<<" {
                        // A merge key: a mapping, or a list of them (the first wins).
                        match value {
                            Node::Mapping(m) => merged.push(m),
                            Node::Sequence(list) => {
                                for n in list.iter() {
                                    match n {
                                        Node::Mapping(m) => merged.push(m.clone()),
                                        _ => return Err(LoadError::MappingKeyMustBeScalar(key_mark)),
                                    }
                                }
                            }
                            Node::Scalar(_) => return Err(LoadError::MappingKeyMustBeScalar(key_mark)),
                        }
                        continue;
                    }
                    if let Some((prev, _)) = map.get_key_value(key.as_str()) {
                        let prev_key = prev.clone();
                        return Err(LoadError::DuplicateKey(Box::new(marked_yaml::loader::DuplicateKeyInner {
                            prev_key,
                            key,
                        })));
                    }
                    map.insert(key, value);
                }
                let end = self.events[self.at].1;
                self.at += 1;
                for m in merged {
                    for (k, v) in m.iter() {
                        if !map.contains_key(k.as_str()) {
                            map.insert(k.clone(), v.clone());
                        }
                    }
                }
                *map.span_mut() = Span::new_with_marks(mark, end);
                let node = Node::from(map);
                self.anchor(id, &node);
                Ok(node)
            }
            _ => Err(LoadError::TopLevelMustBeMapping(mark)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: &Node) -> String {
        match n {
            Node::Scalar(s) => s.as_str().to_string(),
            Node::Sequence(l) => format!("[{}]", l.iter().map(text).collect::<Vec<_>>().join(",")),
            Node::Mapping(m) => {
                let kv: Vec<String> = m.iter().map(|(k, v)| format!("{}:{}", k.as_str(), text(v))).collect();
                format!("{{{}}}", kv.join(","))
            }
        }
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = parse(
            "ui: &ui [{from: a, to: b}]\nbase: &base { x: 1, y: 2 }\none: *ui\ntwo: { <<: *base, y: 3 }\nboth: { <<: [*base, {z: 4}] }\n",
        )
        .unwrap();
        assert_eq!(
            text(&n),
            "{ui:[{from:a,to:b}],base:{x:1,y:2},one:[{from:a,to:b}],two:{y:3,x:1},both:{x:1,y:2,z:4}}"
        );
        // The alias keeps the anchor's position (errors point at what was written).
        let one = n.as_mapping().unwrap().get_node("one").unwrap();
        assert_eq!(one.span().start().map(|m| m.line()), Some(1));
    }

    #[test]
    fn what_stays_refused() {
        assert!(matches!(parse("a: 1\na: 2\n"), Err(LoadError::DuplicateKey(_))));
        assert!(matches!(parse("a: !!str 1\n"), Err(LoadError::UnexpectedTag(_))));
        assert!(matches!(parse("- a\n"), Err(LoadError::TopLevelMustBeMapping(_))));
        assert!(matches!(parse("? [a]\n: 1\n"), Err(LoadError::MappingKeyMustBeScalar(_))));
        assert!(matches!(parse("a: *nope\n"), Err(LoadError::ScanError(..))));
        assert!(parse("").unwrap().as_mapping().is_some_and(|m| m.is_empty()));
        // An alias inside its own anchor; aliases that would copy without bound.
        assert!(matches!(parse("a: &x [*x]\n"), Err(LoadError::UnexpectedAnchor(_))));
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            laughs.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(matches!(parse(&laughs), Err(LoadError::UnexpectedAnchor(_))));
    }
}
