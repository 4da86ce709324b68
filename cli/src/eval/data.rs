//! GoEmotions TSV files: `text<TAB>label ids (comma-separated)<TAB>comment id`.
//! Texts wrapped in double quotes are CSV-quoted (inner quotes doubled) and are unquoted the
//! way the dataset's own loaders (pandas `read_csv(sep="\t")`) do.

use std::path::Path;

/// One labelled text.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// The text as the model sees it.
    pub text: String,
    /// Gold label ids.
    pub labels: Vec<usize>,
}

/// Reads a TSV file; `num_labels` bounds the label ids. Errors name the line.
pub fn read_tsv(path: &Path, num_labels: usize) -> Result<Vec<Example>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_tsv(&text, num_labels).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses TSV text (see [`read_tsv`]).
pub fn parse_tsv(text: &str, num_labels: usize) -> Result<Vec<Example>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.rsplitn(3, '\t');
        let (_id, labels, raw) = match (fields.next(), fields.next(), fields.next()) {
            (Some(id), Some(l), Some(t)) => (id, l, t),
            _ => return Err(format!("line {}: expected text<TAB>labels<TAB>id", n + 1)),
        };
        let labels = labels
            .split(',')
            .map(|x| {
                x.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < num_labels)
                    .ok_or_else(|| {
                        format!(
                            "line {}: label `{x}` is not an id in 0..{}",
                            n + 1,
                            num_labels - 1
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Example {
            text: unquote(raw),
            labels,
        });
    }
    Ok(out)
}

/// CSV unquoting of one field: `"a ""b"" c"` -> `a "b" c`; other fields unchanged.
pub fn unquote(field: &str) -> String {
    if field.len() >= 2 && field.starts_with('"') && field.ends_with('"') {
        field[1..field.len() - 1].replace("\"\"", "\"")
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unquotes() {
        let t = "plain text\t27\tabc\n\"\"\"We need more content.\"\" ...\"\t4,27\tdef\n";
        let ex = parse_tsv(t, 28).unwrap();
        assert_eq!(
            ex[0],
            Example {
                text: "plain text".into(),
                labels: vec![27]
            }
        );
        assert_eq!(ex[1].text, "\"We need more content.\" ...");
        assert_eq!(ex[1].labels, vec![4, 27]);
        assert!(parse_tsv("x\t28\ty\n", 28).unwrap_err().contains("line 1"));
        assert!(parse_tsv("no tabs here\n", 28)
            .unwrap_err()
            .contains("line 1"));
    }
}
