//! `--context` lowers the context a model declares (Auto-J 13B declares 8,192, trained at
//! 4,096): prompts are fitted to the lower one; asking for more than the model declares is a
//! load error saying both numbers.

mod common;

use autoj_judge::engine::generate::GenerationParams;
use autoj_judge::engine::{Engine, JudgeRequest};
use autoj_judge::protocol::fit::TruncationPolicy;
use autoj_judge::protocol::prompt::Task;
use autoj_judge::testkit::TinySpec;
use common::{engine_config, tiny_model, Kind};

fn long_request(policy: TruncationPolicy) -> JudgeRequest {
    JudgeRequest {
        task: Task::Single {
            query: "Summarize this text. ".repeat(40),
            response: "A summary that goes on and on. ".repeat(40),
        },
        language: None,
        params: GenerationParams {
            max_new_tokens: 4,
            ..GenerationParams::default()
        },
        truncation: policy,
        deadline: None,
    }
}

#[test]
fn context_lowers_the_declared_context_and_prompts_fit_it() {
    let tiny = tiny_model(Kind::Hf, &TinySpec::default());
    let engine = Engine::start(engine_config(tiny.path.clone(), 4)).unwrap();
    assert_eq!(
        engine.info().context,
        4096,
        "the config's max_position_embeddings"
    );
    let full = engine
        .submit(long_request(TruncationPolicy::Refuse))
        .unwrap();
    assert!(
        full.admission.prompt_tokens > 600,
        "fits the declared context whole"
    );

    let mut cfg = engine_config(tiny.path.clone(), 4);
    cfg.model.context = Some(600);
    let engine = Engine::start(cfg).unwrap();
    assert_eq!(engine.info().context, 600);
    let err = engine
        .submit(long_request(TruncationPolicy::Refuse))
        .unwrap_err();
    assert!(err.to_string().contains("600"), "{err}");
    let cut = engine.submit(long_request(TruncationPolicy::Auto)).unwrap();
    assert!(cut.admission.truncated_tokens > 0 && cut.admission.prompt_tokens < 600);

    let mut cfg = engine_config(tiny.path.clone(), 4);
    cfg.model.context = Some(100_000);
    let err = Engine::start(cfg).unwrap_err().to_string();
    assert!(err.contains("100000") && err.contains("4096"), "{err}");
}
