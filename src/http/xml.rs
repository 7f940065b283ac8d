//! A small reader for the XML of AWS Query APIs (EC2's answers, STS' AssumeRole): elements,
//! text, the five predefined entities and numeric references; attributes, comments,
//! processing instructions and CDATA are read over.

/// An XML element: its name, its text, and its child elements.
#[derive(Debug, Default)]
pub struct Node {
    pub name: String,
    pub text: String,
    pub children: Vec<Node>,
}

impl Node {
    pub fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    pub fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    pub fn text_of(&self, name: &str) -> String {
        self.child(name).map(|n| n.text.clone()).unwrap_or_default()
    }

    /// The first element named `name` anywhere below.
    pub fn find(&self, name: &str) -> Option<&Node> {
        self.children.iter().find_map(|c| {
            if c.name == name {
                Some(c)
            } else {
                c.find(name)
            }
        })
    }
}

/// Parses the XML of EC2's answers (elements, text, the five predefined entities and
/// numeric references; attributes, comments, processing instructions and CDATA are read
/// over). Returns the document's root element.
pub fn parse_xml(text: &str) -> Result<Node, String> {
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut rest = text;
    while let Some(lt) = rest.find('<') {
        let (before, after) = rest.split_at(lt);
        if let Some(top) = stack.last_mut() {
            top.text.push_str(&unescape(before));
        }
        if let Some(r) = after.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("unterminated CDATA")?;
            if let Some(top) = stack.last_mut() {
                top.text.push_str(&r[..end]);
            }
            rest = &r[end + 3..];
            continue;
        }
        if let Some(r) = after.strip_prefix("<!--") {
            rest = &r[r.find("-->").ok_or("unterminated comment")? + 3..];
            continue;
        }
        let gt = after.find('>').ok_or("unterminated tag")?;
        let tag = &after[1..gt];
        rest = &after[gt + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let node = stack.pop().ok_or("unbalanced closing tag")?;
            if node.name != name.trim() {
                return Err(format!("</{}> closes <{}>", name.trim(), node.name));
            }
            stack
                .last_mut()
                .ok_or("unbalanced closing tag")?
                .children
                .push(node);
            continue;
        }
        let self_closing = tag.ends_with('/');
        let tag = tag.trim_end_matches('/');
        let name = tag.split_whitespace().next().unwrap_or("").to_string();
        let node = Node {
            name,
            ..Default::default()
        };
        if self_closing {
            stack.last_mut().ok_or("no parent")?.children.push(node);
        } else {
            stack.push(node);
        }
    }
    if stack.len() != 1 {
        return Err("unclosed elements".into());
    }
    let mut doc = stack.pop().ok_or("empty document")?;
    let root = doc.children.pop().ok_or("no root element")?;
    Ok(trimmed(root))
}

/// Whitespace around an element's text is layout, not content.
fn trimmed(mut n: Node) -> Node {
    n.text = n.text.trim().to_string();
    n.children = n.children.into_iter().map(trimmed).collect();
    n
}

fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let r = &rest[amp + 1..];
        let Some(semi) = r.find(';') else {
            out.push_str(&rest[amp..]);
            return out;
        };
        let entity = &r[..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&rest[amp..amp + semi + 2]),
        }
        rest = &r[semi + 1..];
    }
    out.push_str(rest);
    out
}
