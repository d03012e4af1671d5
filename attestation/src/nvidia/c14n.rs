//! Inclusive XML canonicalization (W3C C14N 1.0 / 1.1 without comments),
//! the subset NVIDIA's signed RIMs need: elements, attributes, namespace
//! declarations, text and processing instructions of a well-formed
//! document, with one subtree optionally left out (the enveloped
//! signature). DTDs are refused by the parser.

use roxmltree::{Node, NodeId, NodeType};

/// Canonical form of the subtree at `apex`, leaving out `exclude`.
/// The apex renders every namespace in scope, as C14N requires for a
/// document subset.
pub(crate) fn canonicalize(source: &str, apex: Node<'_, '_>, exclude: Option<NodeId>) -> String {
    let mut out = String::with_capacity(source.len());
    element(source, apex, &[], exclude, &mut out);
    out
}

type Ns = (String, String); // (prefix, uri); prefix "" is the default namespace

fn in_scope(node: Node<'_, '_>) -> Vec<Ns> {
    node.namespaces()
        .filter(|n| n.name() != Some("xml"))
        .map(|n| (n.name().unwrap_or("").to_string(), n.uri().to_string()))
        .collect()
}

/// The element's qualified name as written (C14N keeps prefixes).
fn qname<'s>(source: &'s str, node: Node<'_, '_>) -> &'s str {
    let start = node.range().start.saturating_add(1);
    let rest = source.get(start..).unwrap_or("");
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or("")
}

fn element(
    source: &str,
    node: Node<'_, '_>,
    parent_ns: &[Ns],
    exclude: Option<NodeId>,
    out: &mut String,
) {
    let name = qname(source, node);
    out.push('<');
    out.push_str(name);

    let scope = in_scope(node);
    let mut decls: Vec<&Ns> = scope.iter().filter(|ns| !parent_ns.contains(ns)).collect();
    // An element out of a default namespace its parent rendered undeclares it.
    let undeclare_default = !scope.iter().any(|(p, _)| p.is_empty())
        && parent_ns.iter().any(|(p, u)| p.is_empty() && !u.is_empty());
    decls.sort_by(|a, b| a.0.cmp(&b.0));
    if undeclare_default {
        out.push_str(" xmlns=\"\"");
    }
    for (prefix, uri) in decls {
        if prefix.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            out.push_str(" xmlns:");
            out.push_str(prefix);
            out.push_str("=\"");
        }
        escape_attr(uri, out);
        out.push('"');
    }

    let mut attrs: Vec<(&str, &str, &str, &str)> = node
        .attributes()
        .map(|a| {
            let q = source.get(a.range_qname()).unwrap_or(a.name());
            (a.namespace().unwrap_or(""), a.name(), q, a.value())
        })
        .collect();
    attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, _, q, value) in attrs {
        out.push(' ');
        out.push_str(q);
        out.push_str("=\"");
        escape_attr(value, out);
        out.push('"');
    }
    out.push('>');

    for child in node.children() {
        if Some(child.id()) == exclude {
            continue;
        }
        match child.node_type() {
            NodeType::Element => element(source, child, &scope, exclude, out),
            NodeType::Text => escape_text(child.text().unwrap_or(""), out),
            NodeType::PI => {
                if let Some(pi) = child.pi() {
                    out.push_str("<?");
                    out.push_str(pi.target);
                    if let Some(v) = pi.value {
                        out.push(' ');
                        out.push_str(v);
                    }
                    out.push_str("?>");
                }
            }
            NodeType::Comment | NodeType::Root => {}
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        let doc = roxmltree::Document::parse(xml).unwrap();
        canonicalize(xml, doc.root_element(), None)
    }

    #[test]
    fn w3c_c14n_rules() {
        // Empty elements expand, attributes sort (unqualified first, then by
        // namespace URI), namespace declarations come first, sorted by prefix.
        assert_eq!(
            c14n(r#"<a xmlns:z="urn:z" xmlns:b="urn:b" z:x="1" b:y="2" c='3' a="&lt;&quot;"/>"#),
            r#"<a xmlns:b="urn:b" xmlns:z="urn:z" a="&lt;&quot;" c="3" b:y="2" z:x="1"></a>"#
        );
        // Redundant declarations are dropped; text is escaped.
        assert_eq!(
            c14n("<a xmlns=\"urn:a\"><b xmlns=\"urn:a\">x &amp; y &gt; z</b><!-- c --></a>"),
            "<a xmlns=\"urn:a\"><b>x &amp; y &gt; z</b></a>"
        );
        // A subset's apex renders inherited namespaces.
        let xml = "<r xmlns=\"urn:r\" xmlns:p=\"urn:p\"><p:s><t/></p:s></r>";
        let doc = roxmltree::Document::parse(xml).unwrap();
        let s = doc.root_element().first_child().unwrap();
        assert_eq!(
            canonicalize(xml, s, None),
            "<p:s xmlns=\"urn:r\" xmlns:p=\"urn:p\"><t></t></p:s>"
        );
    }
}
