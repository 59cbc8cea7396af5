//! The judge's input text: Auto-J's exact prompt templates and, for models that are not
//! Auto-J, the model's own chat template around them.
//!
//! The template strings below are Auto-J's training format (GAIR-NLP's release) and are
//! reproduced byte for byte: any change, even whitespace, shifts the model off the text it
//! was trained on.

use minijinja::{context, Environment};

use crate::error::{JudgeError, Result};

/// Auto-J's English single-response template.
pub const EN_SINGLE: &str = "Write critiques for a submitted response on a given user's query, and grade the response:\n  \n[BEGIN DATA]\n***\n[Query]: {prompt}\n***\n[Response]: {response}\n***\n[END DATA]\n\nWrite critiques for this response. After that, you should give a final rating for the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".";
/// Auto-J's English pairwise (with tie) template.
pub const EN_PAIRWISE: &str = "You are assessing two submitted responses on a given user's query and judging which response is better or they are tied. Here is the data:\n\n[BEGIN DATA]\n***\n[Query]: {prompt}\n***\n[Response 1]: {response}\n***\n[Response 2]: {response_another}\n***\n[END DATA]\n\nHere are the instructions to assess and compare the two responses:\n\n1. Pinpoint the key factors to distinguish these two responses.\n2. Conclude your comparison by providing a final decision on which response is better, or they are tied. Begin your final decision statement with \"So, the final decision is Response 1 / Response 2 / Tie\". Ensure that your decision aligns coherently with the comprehensive evaluation and comparison you've provided.";
/// Auto-J's Chinese single-response template.
pub const ZH_SINGLE: &str = "为上传的针对给定用户问题的回应撰写评论, 并为该回复打分:\n\n[BEGIN DATA]\n***\n[用户问询]: {prompt}\n***\n[回应]: {response}\n***\n[END DATA]\n\n为这个回应撰写评论. 在这之后, 你应该按照如下格式给这个回应一个最终的1-10范围的评分: \"[[评分]]\", 例如: \"评分: [[5]]\".";
/// Auto-J's Chinese pairwise (with tie) template.
pub const ZH_PAIRWISE: &str = "你将要评价两个针对给定用户问题的回应，并判断哪个回应胜出或两者持平。以下是相关内容:\n\n[BEGIN DATA]\n***\n[用户问询]: {prompt}\n***\n[回应1]: {response}\n***\n[回应2]: {response_another}\n***\n[END DATA]\n\n以下是评价并比较两个回应的指南：\n\n1. 确定区分两个回应的关键因素。\n2. 通过提供最终对何者胜出或两者持平的决定来总结你的比较和评价。最终决定语句应以\"所以，最终决定是回应1/回应2/平局\"开头。确保你的决定与你提供的综合的评价和比较一致。";
/// LLaMA-2's instruction wrapper without a system message, as Auto-J uses it.
pub const LLAMA2_WRAPPER: &str = "[INST] {input} [/INST]";

/// Template language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Chinese.
    Zh,
}

/// Picks Chinese when at least a fifth of the query's non-space characters are CJK
/// ideographs or CJK punctuation, English otherwise.
pub fn detect_language(text: &str) -> Lang {
    let mut cjk = 0usize;
    let mut total = 0usize;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        total += 1;
        if matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x3000..=0x303F | 0xFF00..=0xFFEF)
        {
            cjk += 1;
        }
    }
    if total > 0 && cjk * 5 >= total {
        Lang::Zh
    } else {
        Lang::En
    }
}

/// The judging task with its input fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Compare two responses.
    Pairwise {
        /// The user's query.
        query: String,
        /// Response 1.
        response_1: String,
        /// Response 2.
        response_2: String,
    },
    /// Critique and rate one response.
    Single {
        /// The user's query.
        query: String,
        /// The response.
        response: String,
    },
}

impl Task {
    /// The input fields in template order; truncation shrinks these.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Task::Pairwise {
                query,
                response_1,
                response_2,
            } => vec![query, response_1, response_2],
            Task::Single { query, response } => vec![query, response],
        }
    }

    /// The same task with its fields replaced (in `fields()` order).
    pub fn with_fields(&self, f: &[String]) -> Task {
        match self {
            Task::Pairwise { .. } => Task::Pairwise {
                query: f[0].clone(),
                response_1: f[1].clone(),
                response_2: f[2].clone(),
            },
            Task::Single { .. } => Task::Single {
                query: f[0].clone(),
                response: f[1].clone(),
            },
        }
    }

    /// The query.
    pub fn query(&self) -> &str {
        match self {
            Task::Pairwise { query, .. } | Task::Single { query, .. } => query,
        }
    }

    /// True for pairwise tasks.
    pub fn is_pairwise(&self) -> bool {
        matches!(self, Task::Pairwise { .. })
    }
}

/// How the Auto-J instruction is wrapped for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptFormat {
    /// LLaMA-2's `[INST] ... [/INST]`, as Auto-J was trained.
    AutoJ,
    /// The model's own chat template (Jinja), the instruction as the user turn.
    Chat {
        /// Jinja source of the template.
        template: String,
        /// BOS text, for templates that print it.
        bos_token: String,
        /// EOS text, for templates that print it.
        eos_token: String,
    },
}

/// Substitutes `{name}` placeholders in one pass, like Python's `str.format`, so braces or
/// placeholder names inside user text are never expanded a second time.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|(_, v)| v.len()).sum::<usize>());
    let mut rest = template;
    'outer: while let Some(open) = rest.find('{') {
        for (name, value) in values {
            let tail = &rest[open + 1..];
            if tail.starts_with(name) && tail[name.len()..].starts_with('}') {
                out.push_str(&rest[..open]);
                out.push_str(value);
                rest = &tail[name.len() + 1..];
                continue 'outer;
            }
        }
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
    }
    out.push_str(rest);
    out
}

/// The Auto-J instruction for a task (before the model wrapper).
pub fn instruction(task: &Task, lang: Lang) -> String {
    match (task, lang) {
        (
            Task::Pairwise {
                query,
                response_1,
                response_2,
            },
            l,
        ) => fill(
            if l == Lang::En {
                EN_PAIRWISE
            } else {
                ZH_PAIRWISE
            },
            &[
                ("prompt", query),
                ("response", response_1),
                ("response_another", response_2),
            ],
        ),
        (Task::Single { query, response }, l) => fill(
            if l == Lang::En { EN_SINGLE } else { ZH_SINGLE },
            &[("prompt", query), ("response", response)],
        ),
    }
}

/// The full text the model reads (BOS is added by the tokenizer, not here).
pub fn render(task: &Task, lang: Lang, format: &PromptFormat) -> Result<String> {
    let inst = instruction(task, lang);
    match format {
        PromptFormat::AutoJ => Ok(fill(LLAMA2_WRAPPER, &[("input", &inst)])),
        PromptFormat::Chat {
            template,
            bos_token,
            eos_token,
        } => render_chat(template, &inst, bos_token, eos_token),
    }
}

/// Renders a Hugging Face chat template with one user message and the generation prompt.
pub fn render_chat(template: &str, user: &str, bos: &str, eos: &str) -> Result<String> {
    render_messages(template, &[("user", user)], bos, eos)
}

/// Renders a Hugging Face chat template over `(role, content)` messages, with the
/// generation prompt. A template's own `raise_exception` (a role order it refuses, say)
/// comes back as a `Template` error with its message.
pub fn render_messages(
    template: &str,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
) -> Result<String> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_template("chat", template)
        .map_err(|e| JudgeError::Template(e.to_string()))?;
    let tmpl = env
        .get_template("chat")
        .map_err(|e| JudgeError::Template(e.to_string()))?;
    let messages: Vec<_> = messages
        .iter()
        .map(|(role, content)| context! { role => role, content => content })
        .collect();
    tmpl.render(context! {
        messages => messages,
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| JudgeError::Template(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_single_pass() {
        let t = "[Query]: {prompt}\n[Response]: {response}";
        let got = fill(
            t,
            &[("prompt", "say {response}"), ("response", "ok {prompt}")],
        );
        assert_eq!(got, "[Query]: say {response}\n[Response]: ok {prompt}");
    }

    #[test]
    fn fill_keeps_unknown_braces() {
        assert_eq!(fill("a {x} {y", &[("y", "Y")]), "a {x} {y");
        assert_eq!(fill("{y}{y}", &[("y", "Y")]), "YY");
    }

    #[test]
    fn language_detection() {
        assert_eq!(detect_language("How do I sort a list?"), Lang::En);
        assert_eq!(detect_language("如何给列表排序？"), Lang::Zh);
        assert_eq!(detect_language("用 Python 写一个 quicksort 函数"), Lang::Zh);
        assert_eq!(detect_language(""), Lang::En);
    }

    #[test]
    fn autoj_wrapper_matches_training_format() {
        let task = Task::Single {
            query: "Q".into(),
            response: "R".into(),
        };
        let s = render(&task, Lang::En, &PromptFormat::AutoJ).unwrap();
        assert!(s.starts_with("[INST] Write critiques for a submitted response"));
        assert!(s.contains("[Query]: Q\n***\n[Response]: R\n***"));
        assert!(s.ends_with("\"Rating: [[5]]\". [/INST]"));
    }

    #[test]
    fn chat_template_renders_user_turn() {
        let tmpl = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let s = render_chat(tmpl, "hi", "", "").unwrap();
        assert_eq!(s, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }
}
