//! Chat requests as the model reads them: the conversation checked, then rendered with the
//! model's chat template, or as LLaMA-2 `[INST]` turns (Auto-J's format) when it has none.
//!
//! LLaMA-2 turns are built token by token, as Meta's reference does: each finished
//! exchange is `BOS [INST] user [/INST] answer EOS`, the last user message
//! `BOS [INST] user [/INST]`, contents stripped of surrounding whitespace; a system message
//! goes inside the first user turn between `<<SYS>>` and `<</SYS>>`. A single user message
//! is therefore exactly Auto-J's wrapper, `[INST] {input} [/INST]`.

use std::fmt;
use std::str::FromStr;

use crate::error::{JudgeError, Result};
use crate::protocol::fit::TokenText;
use crate::protocol::prompt::{render_messages, PromptFormat};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    /// Instructions for the model; first message only.
    System,
    /// The person (or tool) asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

impl ChatRole {
    /// The name chat templates and OpenAI's API use.
    pub fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl fmt::Display for ChatRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ChatRole {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            other => Err(format!(
                "role `{other}` is not one of `system`, `user`, `assistant`"
            )),
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: ChatRole,
    /// The text.
    pub content: String,
}

fn invalid(index: usize, reason: impl fmt::Display) -> JudgeError {
    JudgeError::InvalidArgument(format!("messages[{index}]: {reason}"))
}

/// Checks what every format needs: at least one message, a system message only first,
/// non-empty user messages, and a user message last (the model answers it).
pub fn check(messages: &[ChatMessage]) -> Result<()> {
    let Some(last) = messages.last() else {
        return Err(JudgeError::InvalidArgument(
            "messages: at least one message is required".into(),
        ));
    };
    for (i, m) in messages.iter().enumerate() {
        if m.role == ChatRole::System && i > 0 {
            return Err(invalid(i, "a system message may only come first"));
        }
        if m.role == ChatRole::User && m.content.trim().is_empty() {
            return Err(invalid(i, "a user message must not be empty"));
        }
    }
    if last.role != ChatRole::User {
        return Err(invalid(
            messages.len() - 1,
            format!(
                "the last message must be the user's, not the {}'s",
                last.role
            ),
        ));
    }
    Ok(())
}

/// The prompt's token ids for `messages` in `format` (checked with [`check`] first). `eos`
/// ends each finished exchange of LLaMA-2 turns.
pub fn prompt_ids(
    messages: &[ChatMessage],
    format: &PromptFormat,
    tok: &impl TokenText,
    eos: Option<u32>,
) -> Result<Vec<u32>> {
    check(messages)?;
    match format {
        PromptFormat::AutoJ => llama2_ids(messages, tok, eos),
        PromptFormat::Chat {
            template,
            bos_token,
            eos_token,
        } => {
            let pairs: Vec<(&str, &str)> = messages
                .iter()
                .map(|m| (m.role.name(), m.content.as_str()))
                .collect();
            let text = render_messages(template, &pairs, bos_token, eos_token).map_err(|e| {
                JudgeError::InvalidArgument(format!(
                    "the model's chat template refused the messages: {e}"
                ))
            })?;
            tok.encode(&text, true)
        }
    }
}

/// LLaMA-2 `[INST]` turns, token by token.
fn llama2_ids(
    messages: &[ChatMessage],
    tok: &impl TokenText,
    eos: Option<u32>,
) -> Result<Vec<u32>> {
    let (system, rest) = match messages.split_first() {
        Some((first, rest)) if first.role == ChatRole::System => (Some(first.content.trim()), rest),
        _ => (None, messages),
    };
    // User and assistant must alternate, user first.
    for (j, m) in rest.iter().enumerate() {
        let want = if j % 2 == 0 {
            ChatRole::User
        } else {
            ChatRole::Assistant
        };
        if m.role != want {
            let index = j + usize::from(system.is_some());
            return Err(invalid(
                index,
                format!("LLaMA-2 turns alternate user and assistant, starting with user; found {} where {want} belongs", m.role),
            ));
        }
    }
    let mut ids = Vec::new();
    for (j, pair) in rest.chunks(2).enumerate() {
        let mut user = pair[0].content.trim().to_string();
        if let (0, Some(sys)) = (j, system) {
            user = format!("<<SYS>>\n{sys}\n<</SYS>>\n\n{user}");
        }
        match pair.get(1) {
            Some(answer) => {
                let text = format!("[INST] {user} [/INST] {} ", answer.content.trim());
                ids.extend(tok.encode(&text, true)?);
                ids.extend(eos);
            }
            None => ids.extend(tok.encode(&format!("[INST] {user} [/INST]"), true)?),
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Characters as ids, BOS 1; decode is the reverse.
    struct Chars;

    impl TokenText for Chars {
        fn encode(&self, text: &str, with_bos: bool) -> Result<Vec<u32>> {
            Ok(with_bos
                .then_some(1)
                .into_iter()
                .chain(text.chars().map(|c| c as u32))
                .collect())
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            Ok(ids.iter().filter_map(|&i| char::from_u32(i)).collect())
        }
    }

    fn msg(role: ChatRole, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    fn text(ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| match i {
                1 => "<s>".to_string(),
                2 => "</s>".to_string(),
                i => char::from_u32(i).unwrap().to_string(),
            })
            .collect()
    }

    #[test]
    fn llama2_turns_are_metas_format() {
        use ChatRole::*;
        let one = prompt_ids(&[msg(User, " hi ")], &PromptFormat::AutoJ, &Chars, Some(2)).unwrap();
        assert_eq!(text(&one), "<s>[INST] hi [/INST]");
        let talk = [
            msg(System, "be brief"),
            msg(User, "a"),
            msg(Assistant, "b"),
            msg(User, "c"),
        ];
        let ids = prompt_ids(&talk, &PromptFormat::AutoJ, &Chars, Some(2)).unwrap();
        assert_eq!(
            text(&ids),
            "<s>[INST] <<SYS>>\nbe brief\n<</SYS>>\n\na [/INST] b </s><s>[INST] c [/INST]"
        );
    }

    #[test]
    fn bad_conversations_name_the_message() {
        use ChatRole::*;
        let cases: [(&[ChatMessage], &str); 5] = [
            (&[], "at least one"),
            (
                &[msg(User, "a"), msg(System, "s"), msg(User, "b")],
                "messages[1]",
            ),
            (&[msg(User, "  ")], "must not be empty"),
            (
                &[msg(User, "a"), msg(Assistant, "b")],
                "last message must be the user's",
            ),
            (
                &[msg(User, "a"), msg(User, "b")],
                "messages[1]: LLaMA-2 turns alternate",
            ),
        ];
        for (messages, want) in cases {
            let e = prompt_ids(messages, &PromptFormat::AutoJ, &Chars, Some(2)).unwrap_err();
            assert!(e.to_string().contains(want), "{e} should say {want}");
        }
        assert!("tool".parse::<ChatRole>().unwrap_err().contains("`tool`"));
    }

    #[test]
    fn chat_templates_see_every_message() {
        let format = PromptFormat::Chat {
            template: "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let talk = [
            msg(ChatRole::System, "s"),
            msg(ChatRole::User, "u"),
            msg(ChatRole::Assistant, "a"),
            msg(ChatRole::User, "v"),
        ];
        let ids = prompt_ids(&talk, &format, &Chars, None).unwrap();
        assert_eq!(
            text(&ids),
            "<s><system>s<user>u<assistant>a<user>v<assistant>"
        );
        let refusing = PromptFormat::Chat {
            template: "{{ raise_exception('roles must alternate') }}".into(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        let e = prompt_ids(&talk, &refusing, &Chars, None).unwrap_err();
        assert!(matches!(e, JudgeError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("roles must alternate"), "{e}");
    }
}
