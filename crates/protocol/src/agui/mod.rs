//! AG-UI, the agent-to-UI event protocol: the events Chorus streams from
//! `POST /api/v1/agui/{agent_id}`, the `RunAgentInput` it accepts, and the
//! mapping from Chorus run events to AG-UI events.

mod event;
mod input;
mod mapper;

pub use event::{
    AGUI_PROTOCOL_VERSION, AguiEvent, AguiFrame, ReasoningRole, RunFinishedOutcome, TextRole, TokenUsage, ToolRole,
};
pub use input::{
    FrontendTool, InputError, InputMessage, InputRole, MAX_INPUT_MESSAGES, MAX_INPUT_TOOLS, RunAgentInput,
    ToolCallInput,
};
pub use mapper::{AguiMapper, AguiRun};
