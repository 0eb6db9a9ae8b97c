//! Output as the OpenStack client prints it: a table (Field/Value for one resource, columns
//! for lists), JSON, YAML or bare values; `-c` picks columns.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
    Value,
}

pub struct Output {
    format: Format,
    columns: Vec<String>,
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::String(text) => text.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        other => other.to_string(),
    }
}

fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|name| name.chars().count()).collect();
    for row in rows {
        for (index, value) in row.iter().enumerate() {
            widths[index] = widths[index].max(value.chars().count());
        }
    }
    let rule = format!(
        "+{}+",
        widths
            .iter()
            .map(|width| "-".repeat(width + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!(" {value:<width$} "))
            .collect();
        format!("|{}|", parts.join("|"))
    };
    let mut out = vec![rule.clone(), line(header), rule.clone()];
    out.extend(rows.iter().map(|row| line(row)));
    out.push(rule);
    out.join("\n")
}

fn yaml(value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(object) if !object.is_empty() => object
            .iter()
            .map(|(key, value)| match value {
                Value::Object(inner) if !inner.is_empty() => {
                    format!("{pad}{key}:\n{}", yaml(value, indent + 2))
                }
                Value::Array(items) if !items.is_empty() => {
                    format!("{pad}{key}:\n{}", yaml(value, indent))
                }
                other => format!("{pad}{key}: {}", yaml(other, 0).trim_start()),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                let rendered = yaml(item, indent + 2);
                format!("{pad}- {}", rendered.trim_start())
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(_) => format!("{pad}{{}}"),
        Value::Array(_) => format!("{pad}[]"),
        Value::Null => format!("{pad}null"),
        Value::String(text) => format!("{pad}{}", Value::String(text.clone())),
        other => format!("{pad}{other}"),
    }
}

impl Output {
    pub fn new(format: Format, columns: Vec<String>) -> Self {
        Self { format, columns }
    }

    pub fn message(&self, text: &str) {
        println!("{text}");
    }

    fn chosen<'a>(&'a self, available: &[&'a str]) -> Vec<&'a str> {
        if self.columns.is_empty() {
            available.to_vec()
        } else {
            self.columns.iter().map(String::as_str).collect()
        }
    }

    /// One resource.
    pub fn show(&self, resource: &Value) {
        let keys: Vec<&str> = resource
            .as_object()
            .map(|object| object.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let keys = self.chosen(&keys);
        let picked: serde_json::Map<String, Value> = keys
            .iter()
            .map(|key| {
                (
                    (*key).to_owned(),
                    resource.get(*key).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&picked).unwrap_or_default()
            ),
            Format::Yaml => println!("{}", yaml(&Value::Object(picked), 0)),
            Format::Value => {
                for value in picked.values() {
                    println!("{}", cell(value));
                }
            }
            Format::Table => {
                let rows: Vec<Vec<String>> = picked
                    .iter()
                    .map(|(key, value)| vec![key.clone(), cell(value)])
                    .collect();
                println!(
                    "{}",
                    table(&["Field".to_owned(), "Value".to_owned()], &rows)
                );
            }
        }
    }

    /// One resource of a list that goes on (`--watch`): a line per resource, as soon as it
    /// comes (JSON: one object per line).
    pub fn stream_row(&self, item: &Value, columns: &[&str]) {
        let columns = self.chosen(columns);
        let picked: serde_json::Map<String, Value> = columns
            .iter()
            .map(|column| {
                (
                    (*column).to_owned(),
                    item.get(*column).cloned().unwrap_or(Value::Null),
                )
            })
            .collect();
        match self.format {
            Format::Json => println!("{}", Value::Object(picked)),
            Format::Yaml => println!("---\n{}", yaml(&Value::Object(picked), 0)),
            Format::Value | Format::Table => println!(
                "{}",
                picked.values().map(cell).collect::<Vec<_>>().join(" ")
            ),
        }
    }

    /// Many resources, with default columns.
    pub fn list(&self, items: &[Value], columns: &[&str]) {
        let columns = self.chosen(columns);
        let rows: Vec<serde_json::Map<String, Value>> = items
            .iter()
            .map(|item| {
                columns
                    .iter()
                    .map(|column| {
                        (
                            (*column).to_owned(),
                            item.get(*column).cloned().unwrap_or(Value::Null),
                        )
                    })
                    .collect()
            })
            .collect();
        match self.format {
            Format::Json => println!(
                "{}",
                serde_json::to_string_pretty(&Value::Array(
                    rows.into_iter().map(Value::Object).collect()
                ))
                .unwrap_or_default()
            ),
            Format::Yaml => println!(
                "{}",
                yaml(
                    &Value::Array(rows.into_iter().map(Value::Object).collect()),
                    0
                )
            ),
            Format::Value => {
                for row in rows {
                    println!("{}", row.values().map(cell).collect::<Vec<_>>().join(" "));
                }
            }
            Format::Table => {
                let header: Vec<String> =
                    columns.iter().map(|column| (*column).to_owned()).collect();
                let cells: Vec<Vec<String>> = rows
                    .iter()
                    .map(|row| row.values().map(cell).collect())
                    .collect();
                println!("{}", table(&header, &cells));
            }
        }
    }
}
