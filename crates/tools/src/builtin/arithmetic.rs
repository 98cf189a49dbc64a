//! The calculator's expression language: a tokenizer and a recursive-descent
//! evaluator over `f64`, bounded in length and nesting, that never panics.
//!
//! ```text
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/" | "%") unary)*
//! unary   := ("-" | "+") unary | power
//! power   := atom (("^" | "**") unary)?        right-associative, binds tighter than unary minus
//! atom    := number | "(" sum ")"
//! ```

use std::fmt;

/// Longest expression, in characters.
pub const MAX_CHARS: usize = 1000;
/// Deepest nesting of parentheses and unary signs.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub enum CalcError {
    Empty,
    TooLong,
    TooDeep,
    UnexpectedChar { ch: char, at: usize },
    UnexpectedToken { found: String, at: usize },
    UnexpectedEnd,
    UnclosedParen { at: usize },
    BadNumber { text: String, at: usize },
    DivisionByZero,
    Overflow,
    NotReal,
}

impl fmt::Display for CalcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalcError::Empty => write!(f, "the expression is empty"),
            CalcError::TooLong => write!(f, "the expression is longer than {MAX_CHARS} characters"),
            CalcError::TooDeep => write!(f, "the expression nests deeper than {MAX_DEPTH} levels"),
            CalcError::UnexpectedChar { ch, at } => {
                write!(f, "unexpected character {ch:?} at position {at}; use numbers, + - * / % ^ and parentheses")
            }
            CalcError::UnexpectedToken { found, at } => write!(f, "unexpected {found} at position {at}"),
            CalcError::UnexpectedEnd => write!(f, "the expression ends too early"),
            CalcError::UnclosedParen { at } => write!(f, "the parenthesis at position {at} is never closed"),
            CalcError::BadNumber { text, at } => write!(f, "{text:?} at position {at} is not a number"),
            CalcError::DivisionByZero => write!(f, "division by zero"),
            CalcError::Overflow => write!(f, "the result is too large"),
            CalcError::NotReal => write!(f, "the result is not a real number"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Num(f64),
    Plus,
    Minus,
    Times,
    Divide,
    Rem,
    Pow,
    Open,
    Close,
}

impl Tok {
    fn describe(self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Times => "'*'".into(),
            Tok::Divide => "'/'".into(),
            Tok::Rem => "'%'".into(),
            Tok::Pow => "'^'".into(),
            Tok::Open => "'('".into(),
            Tok::Close => "')'".into(),
        }
    }
}

/// Positions are 1-based character positions, as a person counts them.
fn tokenize(input: &str) -> Result<Vec<(Tok, usize)>, CalcError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = i + 1;
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                // An exponent only when digits follow: `2e3`, `2E-3`.
                if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                    let mut j = i + 1;
                    if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                        j += 1;
                    }
                    if j < chars.len() && chars[j].is_ascii_digit() {
                        i = j;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                    }
                }
                let text: String = chars[start..i].iter().collect();
                let value: f64 = text.parse().map_err(|_| CalcError::BadNumber { text: text.clone(), at })?;
                if !value.is_finite() {
                    return Err(CalcError::Overflow);
                }
                out.push((Tok::Num(value), at));
                continue;
            }
            '+' => Tok::Plus,
            '-' | '\u{2212}' => Tok::Minus,
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 1;
                Tok::Pow
            }
            '*' | '\u{00d7}' | '\u{22c5}' => Tok::Times,
            '/' | '\u{00f7}' => Tok::Divide,
            '%' => Tok::Rem,
            '^' => Tok::Pow,
            '(' => Tok::Open,
            ')' => Tok::Close,
            ch => return Err(CalcError::UnexpectedChar { ch, at }),
        };
        out.push((tok, at));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

fn finite(v: f64) -> Result<f64, CalcError> {
    if v.is_nan() {
        Err(CalcError::NotReal)
    } else if v.is_infinite() {
        Err(CalcError::Overflow)
    } else {
        Ok(v)
    }
}

impl Parser {
    fn peek(&self) -> Option<Tok> {
        self.toks.get(self.pos).map(|t| t.0)
    }

    fn descend(&mut self) -> Result<(), CalcError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(CalcError::TooDeep) } else { Ok(()) }
    }

    fn sum(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.product()?;
        while let Some(op @ (Tok::Plus | Tok::Minus)) = self.peek() {
            self.pos += 1;
            let rhs = self.product()?;
            acc = finite(if op == Tok::Plus { acc + rhs } else { acc - rhs })?;
        }
        Ok(acc)
    }

    fn product(&mut self) -> Result<f64, CalcError> {
        let mut acc = self.unary()?;
        while let Some(op @ (Tok::Times | Tok::Divide | Tok::Rem)) = self.peek() {
            self.pos += 1;
            let rhs = self.unary()?;
            acc = match op {
                Tok::Times => finite(acc * rhs)?,
                _ if rhs == 0.0 => return Err(CalcError::DivisionByZero),
                Tok::Divide => finite(acc / rhs)?,
                _ => finite(acc % rhs)?,
            };
        }
        Ok(acc)
    }

    fn unary(&mut self) -> Result<f64, CalcError> {
        match self.peek() {
            Some(sign @ (Tok::Minus | Tok::Plus)) => {
                self.pos += 1;
                self.descend()?;
                let v = self.unary()?;
                self.depth -= 1;
                Ok(if sign == Tok::Minus { -v } else { v })
            }
            _ => self.power(),
        }
    }

    fn power(&mut self) -> Result<f64, CalcError> {
        let base = self.atom()?;
        if self.peek() != Some(Tok::Pow) {
            return Ok(base);
        }
        self.pos += 1;
        self.descend()?;
        let exponent = self.unary()?;
        self.depth -= 1;
        if base == 0.0 && exponent < 0.0 {
            return Err(CalcError::DivisionByZero);
        }
        finite(base.powf(exponent))
    }

    fn atom(&mut self) -> Result<f64, CalcError> {
        let Some(&(tok, at)) = self.toks.get(self.pos) else {
            return Err(CalcError::UnexpectedEnd);
        };
        self.pos += 1;
        match tok {
            Tok::Num(v) => Ok(v),
            Tok::Open => {
                self.descend()?;
                let v = self.sum()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Tok::Close) => {
                        self.pos += 1;
                        Ok(v)
                    }
                    Some(_) => Err(self.unexpected()),
                    None => Err(CalcError::UnclosedParen { at }),
                }
            }
            other => Err(CalcError::UnexpectedToken { found: other.describe(), at }),
        }
    }

    fn unexpected(&self) -> CalcError {
        match self.toks.get(self.pos) {
            Some(&(tok, at)) => CalcError::UnexpectedToken { found: tok.describe(), at },
            None => CalcError::UnexpectedEnd,
        }
    }
}

/// Evaluates `input`; every failure is a `CalcError`, never a panic.
pub fn evaluate(input: &str) -> Result<f64, CalcError> {
    if input.chars().nth(MAX_CHARS).is_some() {
        return Err(CalcError::TooLong);
    }
    let toks = tokenize(input)?;
    if toks.is_empty() {
        return Err(CalcError::Empty);
    }
    let mut p = Parser { toks, pos: 0, depth: 0 };
    let v = p.sum()?;
    if p.pos < p.toks.len() {
        return Err(p.unexpected());
    }
    // `-0` reads oddly in an answer.
    Ok(if v == 0.0 { 0.0 } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> f64 {
        evaluate(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn arithmetic_follows_the_usual_rules() {
        let cases = [
            ("12*(3+4)", 84.0),
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("10 - 4 - 3", 3.0),
            ("100 / 10 / 5", 2.0),
            ("7 % 3", 1.0),
            ("-7 % 3", -1.0),
            ("2 ^ 10", 1024.0),
            ("2 ** 10", 1024.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("-2 ^ 2", -4.0),
            ("(-2) ^ 2", 4.0),
            ("2 ^ -1", 0.5),
            ("--3", 3.0),
            ("+3", 3.0),
            ("-(2 + 3)", -5.0),
            ("3 * -2", -6.0),
            ("1.5 + .5", 2.0),
            ("2.", 2.0),
            ("1e3 + 2E-1", 1000.2),
            ("6 \u{00f7} 3 \u{00d7} 2 \u{2212} 1", 3.0),
            ("  42  ", 42.0),
            ("4 ^ 0.5", 2.0),
            ("-0", 0.0),
        ];
        for (expr, want) in cases {
            assert!((ok(expr) - want).abs() < 1e-9, "{expr} = {} (want {want})", ok(expr));
        }
        assert!(ok("-0").is_sign_positive());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", CalcError::Empty),
            ("   ", CalcError::Empty),
            ("1 / 0", CalcError::DivisionByZero),
            ("1 % 0", CalcError::DivisionByZero),
            ("0 ^ -1", CalcError::DivisionByZero),
            ("1 / (2 - 2)", CalcError::DivisionByZero),
            ("10 ^ 400", CalcError::Overflow),
            ("1e308 * 10", CalcError::Overflow),
            ("1e999", CalcError::Overflow),
            ("(-8) ^ 0.5", CalcError::NotReal),
            ("2 +", CalcError::UnexpectedEnd),
            ("(1 + 2", CalcError::UnclosedParen { at: 1 }),
            ("1 + 2)", CalcError::UnexpectedToken { found: "')'".into(), at: 6 }),
            ("2 3", CalcError::UnexpectedToken { found: "number 3".into(), at: 3 }),
            ("2(3)", CalcError::UnexpectedToken { found: "'('".into(), at: 2 }),
            ("* 2", CalcError::UnexpectedToken { found: "'*'".into(), at: 1 }),
            ("1.2.3", CalcError::BadNumber { text: "1.2.3".into(), at: 1 }),
            (".", CalcError::BadNumber { text: ".".into(), at: 1 }),
            ("2e", CalcError::UnexpectedChar { ch: 'e', at: 2 }),
            ("x + 1", CalcError::UnexpectedChar { ch: 'x', at: 1 }),
            ("sqrt(2)", CalcError::UnexpectedChar { ch: 's', at: 1 }),
        ];
        for (expr, want) in cases {
            assert_eq!(evaluate(expr), Err(want), "{expr}");
        }
    }

    #[test]
    fn length_and_depth_are_bounded() {
        assert_eq!(evaluate(&"1+".repeat(600)), Err(CalcError::TooLong));
        assert_eq!(evaluate(&format!("{}1{}", "(".repeat(65), ")".repeat(65))), Err(CalcError::TooDeep));
        assert_eq!(ok(&format!("{}1{}", "(".repeat(60), ")".repeat(60))), 1.0);
        assert_eq!(evaluate(&"-".repeat(100)), Err(CalcError::TooDeep));
        assert_eq!(evaluate(&format!("{}2", "2^".repeat(100))), Err(CalcError::TooDeep));
        // Long flat sums are fine: only nesting is limited.
        assert_eq!(ok(&format!("1{}", "+1".repeat(400))), 401.0);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "0123456789.eE+-*/%^() \u{2212}\u{00d7}\u{00f7}x\u{1F600}\n\t\0".chars().collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        for _ in 0..20_000 {
            let len = rng.random_range(0..80);
            let s: String = (0..len).map(|_| alphabet[rng.random_range(0..alphabet.len())]).collect();
            if let Ok(v) = evaluate(&s) {
                assert!(v.is_finite(), "{s:?} gave {v}");
            }
        }
        for _ in 0..2_000 {
            let len = rng.random_range(0..2000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = evaluate(&String::from_utf8_lossy(&bytes));
        }
    }
}
