//! The Temporal client behind `start_action`, `get_action_status` and friends: the RPCs
//! and the values they return (the twins of `nomad_actions.native_types`). The Python
//! handle, `ClientRef`, is in [`python`].
//!
//! One connection per [`ConnectionConfig`], opened lazily on first use and shared by every
//! call and thread of the process (upstream NOMAD opens a new one per call). tonic's channel
//! reconnects by itself when the server comes back after a restart. All RPCs are raw
//! `WorkflowService` calls of temporalio-client; payloads are converted in [`crate::payload`].

mod python;
mod types;

pub use python::{ClientRef, connection_count, unix_time};
pub use types::{Execution, ExecutionPage, FailureDetails, Outcome, PendingActivity, StartRequest};

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::codec::{self, FernetCodec};
use crate::connection::{ConnectionConfig, bounded, connection};
use crate::errors::EngineError;
use crate::payload::{self, Json};
use serde_json::Value;
use temporalio_client::Connection;
use temporalio_common::protos::temporal::api::common::v1::{
    Memo, Priority, SearchAttributes, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::{HistoryEventFilterType, TaskQueueKind};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, ListSearchAttributesRequest,
};
use temporalio_common::protos::temporal::api::query::v1::WorkflowQuery;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryRequest, ListWorkflowExecutionsRequest, QueryWorkflowRequest,
    RequestCancelWorkflowExecutionRequest, SignalWorkflowExecutionRequest,
    StartWorkflowExecutionRequest, TerminateWorkflowExecutionRequest,
};

/// Seconds since the epoch of a protobuf timestamp (several Timestamp types are in play:
/// prost's and prost-wkt's, so take the two fields).
macro_rules! seconds {
    ($ts:expr) => {
        $ts.as_ref()
            .map(|t| t.seconds as f64 + f64::from(t.nanos) / 1e9)
    };
}

fn memo_values(memo: Option<&Memo>) -> HashMap<String, Json> {
    memo.map(|m| {
        m.fields
            .iter()
            // A memo field we cannot read (another SDK's encoding) reads as None.
            .map(|(k, p)| {
                (
                    k.clone(),
                    Json(payload::from_payload(p).unwrap_or(Value::Null)),
                )
            })
            .collect()
    })
    .unwrap_or_default()
}

fn payload_err(context: impl Into<String>) -> impl FnOnce(payload::PayloadError) -> EngineError {
    let context = context.into();
    move |source| EngineError::Payload { context, source }
}

/// Send a request that changes nothing (describe, list, count, query), once more if the
/// connection broke under the first try. A connection reset by a proxy or the server shows
/// only on the next call made over it, and by the time of the second try the channel has
/// reconnected; a call that changes something (start, signal, cancel) is never resent.
macro_rules! read_rpc {
    ($svc:expr, $method:ident, $request:expr) => {{
        let request = $request;
        match $svc.$method(tonic::Request::new(request.clone())).await {
            Err(status) if crate::errors::connection_lost(&status) => {
                $svc.$method(tonic::Request::new(request)).await
            }
            other => other,
        }
    }};
}

/// The client for one configuration. Cheap to create: the connection is shared and lazy.
#[derive(Clone, Debug)]
pub struct Client {
    pub config: ConnectionConfig,
    pub codec: Option<FernetCodec>,
}

impl Client {
    /// A client for `config`; the connection itself is opened lazily and shared.
    pub fn new(config: ConnectionConfig) -> Self {
        let codec = FernetCodec::for_config(&config);
        Client { config, codec }
    }

    async fn conn(&self) -> Result<Connection, EngineError> {
        connection(&self.config).await
    }

    fn ns(&self) -> String {
        self.config.namespace.clone()
    }

    /// Start a workflow; returns its run id. Fails with `AlreadyStarted` if the id is taken.
    pub async fn start_workflow(&self, req: StartRequest) -> Result<String, EngineError> {
        let args: Vec<Value> = req.args.into_iter().map(|j| j.0).collect();
        let memo = Memo {
            fields: req
                .memo
                .iter()
                .map(|(k, v)| (k.clone(), payload::to_payload(&v.0)))
                .collect(),
        };
        let request = StartWorkflowExecutionRequest {
            namespace: self.ns(),
            workflow_id: req.workflow_id.clone(),
            workflow_type: Some(WorkflowType {
                name: req.workflow_type,
            }),
            task_queue: Some(TaskQueue {
                name: req.task_queue,
                kind: TaskQueueKind::Normal as i32,
                ..Default::default()
            }),
            input: Some(codec::encode_values(&args, self.codec.as_ref())),
            identity: self.config.identity.clone(),
            // Idempotency key: a retried RPC does not start a second run.
            request_id: uuid::Uuid::new_v4().to_string(),
            memo: Some(memo),
            search_attributes: keyword_search_attributes(&req.search_attributes),
            priority: req.priority.map(|(priority_key, fairness_key)| Priority {
                priority_key,
                fairness_key,
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut svc = self.conn().await?.workflow_service();
        let resp = svc
            .start_workflow_execution(tonic::Request::new(request))
            .await
            .map_err(|s| {
                EngineError::from_status(
                    "StartWorkflowExecution",
                    s,
                    &req.workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?;
        Ok(resp.into_inner().run_id)
    }

    /// Describe the latest run of `workflow_id`.
    pub async fn describe(&self, workflow_id: &str) -> Result<Execution, EngineError> {
        let request = DescribeWorkflowExecutionRequest {
            namespace: self.ns(),
            execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: String::new(),
            }),
        };
        let mut svc = self.conn().await?.workflow_service();
        let resp = read_rpc!(svc, describe_workflow_execution, request)
            .map_err(|s| {
                EngineError::from_status(
                    "DescribeWorkflowExecution",
                    s,
                    workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?
            .into_inner();
        let info = resp.workflow_execution_info.unwrap_or_default();
        let execution = info.execution.clone().unwrap_or_default();
        let pending_activities = resp
            .pending_activities
            .iter()
            .map(|a| PendingActivity {
                activity_id: a.activity_id.clone(),
                activity_type: a
                    .activity_type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
                attempt: a.attempt,
                state: a.state,
                heartbeat_details: a
                    .heartbeat_details
                    .as_ref()
                    .map(|d| {
                        d.payloads
                            .iter()
                            .map(|p| {
                                let value = codec::decode_value(p, self.codec.as_ref());
                                Json(value.unwrap_or(Value::Null))
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                last_failure: a.last_failure.as_ref().map(|f| f.message.clone()),
            })
            .collect();
        let root_workflow_id = info
            .root_execution
            .as_ref()
            .map(|e| e.workflow_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| execution.workflow_id.clone());
        Ok(Execution {
            workflow_id: execution.workflow_id,
            run_id: execution.run_id,
            workflow_type: info
                .r#type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            task_queue: info.task_queue.clone(),
            status: info.status,
            start_time: seconds!(info.start_time),
            close_time: seconds!(info.close_time),
            history_length: info.history_length,
            memo: memo_values(info.memo.as_ref()),
            pending_activities,
            root_workflow_id,
        })
    }

    /// Wait for the workflow to close and return its outcome, following continue-as-new
    /// and workflow retries to the final run, like temporalio's `handle.result()`.
    pub async fn result(
        &self,
        workflow_id: &str,
        run_id: Option<String>,
    ) -> Result<Outcome, EngineError> {
        let mut run_id = run_id.unwrap_or_default();
        let mut page_token = Vec::new();
        let mut svc = self.conn().await?.workflow_service();
        loop {
            let request = GetWorkflowExecutionHistoryRequest {
                namespace: self.ns(),
                execution: Some(WorkflowExecution {
                    workflow_id: workflow_id.to_string(),
                    run_id: run_id.clone(),
                }),
                next_page_token: page_token.clone(),
                wait_new_event: true,
                history_event_filter_type: HistoryEventFilterType::CloseEvent as i32,
                skip_archival: true,
                ..Default::default()
            };
            let resp = match svc
                .get_workflow_execution_history(tonic::Request::new(request))
                .await
            {
                Ok(resp) => resp.into_inner(),
                // A busy server cancels or times out a long poll now and then (the dev
                // server's SQLite under load does): nothing happened to the workflow, so
                // poll again, as after an empty answer. The caller's timeout still applies.
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
                    ) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(s) => {
                    return Err(EngineError::from_status(
                        "GetWorkflowExecutionHistory",
                        s,
                        workflow_id,
                        &self.config.target(),
                        &self.config.namespace,
                    ));
                }
            };
            let events = resp.history.map(|h| h.events).unwrap_or_default();
            let Some(attributes) = events.into_iter().last().and_then(|e| e.attributes) else {
                // The long poll ended without a close event: poll again from the token.
                page_token = resp.next_page_token;
                continue;
            };
            page_token.clear();
            let (status, result, failure, next_run) = match attributes {
                Attributes::WorkflowExecutionCompletedEventAttributes(a) => {
                    let value = codec::decode_first(a.result.as_ref(), self.codec.as_ref())
                        .map_err(payload_err(format!("result of workflow {workflow_id:?}")))?;
                    (2, Some(Json(value)), None, a.new_execution_run_id)
                }
                Attributes::WorkflowExecutionFailedEventAttributes(a) => (
                    3,
                    None,
                    a.failure.as_ref().map(FailureDetails::from_failure),
                    a.new_execution_run_id,
                ),
                Attributes::WorkflowExecutionCanceledEventAttributes(_) => (
                    4,
                    None,
                    Some(FailureDetails {
                        message: "Workflow cancelled".into(),
                        failure_type: "CancelledError".into(),
                        ..Default::default()
                    }),
                    String::new(),
                ),
                Attributes::WorkflowExecutionTerminatedEventAttributes(a) => (
                    5,
                    None,
                    Some(FailureDetails {
                        message: if a.reason.is_empty() {
                            "Workflow terminated".into()
                        } else {
                            a.reason
                        },
                        failure_type: "TerminatedError".into(),
                        ..Default::default()
                    }),
                    String::new(),
                ),
                Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a) => {
                    (6, None, None, a.new_execution_run_id)
                }
                Attributes::WorkflowExecutionTimedOutEventAttributes(a) => (
                    7,
                    None,
                    Some(FailureDetails {
                        message: "Workflow timed out".into(),
                        failure_type: "TimeoutError".into(),
                        ..Default::default()
                    }),
                    a.new_execution_run_id,
                ),
                other => {
                    return Err(EngineError::Rpc {
                        rpc: "GetWorkflowExecutionHistory",
                        code: tonic::Code::Internal,
                        message: format!("unexpected close event {other:?}"),
                    });
                }
            };
            if !next_run.is_empty() {
                run_id = next_run;
                continue;
            }
            return Ok(Outcome {
                run_id,
                status,
                result,
                failure,
            });
        }
    }

    /// Ask the workflow to cancel (it may clean up; its status becomes CANCELED).
    pub async fn cancel(&self, workflow_id: &str, reason: String) -> Result<(), EngineError> {
        let request = RequestCancelWorkflowExecutionRequest {
            namespace: self.ns(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: String::new(),
            }),
            identity: self.config.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            reason,
            ..Default::default()
        };
        let mut svc = self.conn().await?.workflow_service();
        svc.request_cancel_workflow_execution(tonic::Request::new(request))
            .await
            .map_err(|s| {
                EngineError::from_status(
                    "RequestCancelWorkflowExecution",
                    s,
                    workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?;
        Ok(())
    }

    /// End the workflow at once, without running its cleanup.
    pub async fn terminate(&self, workflow_id: &str, reason: String) -> Result<(), EngineError> {
        let request = TerminateWorkflowExecutionRequest {
            namespace: self.ns(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: String::new(),
            }),
            identity: self.config.identity.clone(),
            reason,
            ..Default::default()
        };
        let mut svc = self.conn().await?.workflow_service();
        svc.terminate_workflow_execution(tonic::Request::new(request))
            .await
            .map_err(|s| {
                EngineError::from_status(
                    "TerminateWorkflowExecution",
                    s,
                    workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?;
        Ok(())
    }

    /// Send a signal with JSON arguments.
    pub async fn signal(
        &self,
        workflow_id: &str,
        signal_name: String,
        args: Vec<Value>,
    ) -> Result<(), EngineError> {
        let request = SignalWorkflowExecutionRequest {
            namespace: self.ns(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: String::new(),
            }),
            signal_name,
            input: Some(codec::encode_values(&args, self.codec.as_ref())),
            identity: self.config.identity.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let mut svc = self.conn().await?.workflow_service();
        svc.signal_workflow_execution(tonic::Request::new(request))
            .await
            .map_err(|s| {
                EngineError::from_status(
                    "SignalWorkflowExecution",
                    s,
                    workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?;
        Ok(())
    }

    /// Run a query handler of the workflow and return its answer.
    pub async fn query(
        &self,
        workflow_id: &str,
        query_type: String,
        args: Vec<Value>,
    ) -> Result<Value, EngineError> {
        let request = QueryWorkflowRequest {
            namespace: self.ns(),
            execution: Some(WorkflowExecution {
                workflow_id: workflow_id.to_string(),
                run_id: String::new(),
            }),
            query: Some(WorkflowQuery {
                query_type: query_type.clone(),
                query_args: Some(codec::encode_values(&args, self.codec.as_ref())),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut svc = self.conn().await?.workflow_service();
        let resp = read_rpc!(svc, query_workflow, request)
            .map_err(|s| {
                EngineError::from_status(
                    "QueryWorkflow",
                    s,
                    workflow_id,
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?
            .into_inner();
        if let Some(rejected) = resp.query_rejected {
            return Err(EngineError::Rpc {
                rpc: "QueryWorkflow",
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "query {query_type:?} rejected, workflow status {}",
                    rejected.status
                ),
            });
        }
        codec::decode_first(resp.query_result.as_ref(), self.codec.as_ref())
            .map_err(payload_err(format!("answer to query {query_type:?}")))
    }

    /// List executions matching a visibility `query`, keeping those whose memo contains
    /// every `memo_filter` entry, up to `limit`, newest first.
    pub async fn list(
        &self,
        query: String,
        memo_filter: HashMap<String, Value>,
        limit: usize,
    ) -> Result<Vec<Execution>, EngineError> {
        let mut out = Vec::new();
        let mut page_token = Vec::new();
        let mut svc = self.conn().await?.workflow_service();
        loop {
            let request = ListWorkflowExecutionsRequest {
                namespace: self.ns(),
                page_size: limit.clamp(1, 1000) as i32,
                next_page_token: page_token.clone(),
                query: query.clone(),
            };
            let page = async {
                read_rpc!(svc, list_workflow_executions, request).map_err(|s| {
                    EngineError::from_status(
                        "ListWorkflowExecutions",
                        s,
                        "",
                        &self.config.target(),
                        &self.config.namespace,
                    )
                })
            };
            let resp = bounded(&self.config, "ListWorkflowExecutions", page)
                .await?
                .into_inner();
            for info in resp.executions {
                let memo = memo_values(info.memo.as_ref());
                if !memo_filter
                    .iter()
                    .all(|(k, v)| memo.get(k).is_some_and(|m| &m.0 == v))
                {
                    continue;
                }
                let execution = info.execution.unwrap_or_default();
                let root_workflow_id = info
                    .root_execution
                    .map(|e| e.workflow_id)
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| execution.workflow_id.clone());
                out.push(Execution {
                    workflow_id: execution.workflow_id,
                    run_id: execution.run_id,
                    workflow_type: info.r#type.map(|t| t.name).unwrap_or_default(),
                    task_queue: info.task_queue,
                    status: info.status,
                    start_time: seconds!(info.start_time),
                    close_time: seconds!(info.close_time),
                    history_length: info.history_length,
                    memo,
                    pending_activities: Vec::new(),
                    root_workflow_id,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if resp.next_page_token.is_empty() {
                return Ok(out);
            }
            page_token = resp.next_page_token;
        }
    }
}

/// `values` as Keyword search attributes (JSON strings, typed as temporalio types them), or
/// None when there are none, so that a namespace without them still accepts the start.
pub fn keyword_search_attributes(values: &HashMap<String, String>) -> Option<SearchAttributes> {
    if values.is_empty() {
        return None;
    }
    let indexed_fields = values
        .iter()
        .map(|(name, value)| {
            let mut payload = payload::to_payload(&Value::String(value.clone()));
            payload
                .metadata
                .insert("type".to_string(), b"Keyword".to_vec());
            (name.clone(), payload)
        })
        .collect();
    Some(SearchAttributes { indexed_fields })
}

fn execution_of(
    info: temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo,
) -> Execution {
    let execution = info.execution.unwrap_or_default();
    let root_workflow_id = info
        .root_execution
        .map(|e| e.workflow_id)
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| execution.workflow_id.clone());
    Execution {
        root_workflow_id,
        workflow_id: execution.workflow_id,
        run_id: execution.run_id,
        workflow_type: info.r#type.map(|t| t.name).unwrap_or_default(),
        task_queue: info.task_queue,
        status: info.status,
        start_time: seconds!(info.start_time),
        close_time: seconds!(info.close_time),
        history_length: info.history_length,
        memo: memo_values(info.memo.as_ref()),
        pending_activities: Vec::new(),
    }
}

/// Visibility queries and search-attribute administration: listing by the attributes the
/// engine sets at start, instead of scanning the namespace.
impl Client {
    /// One page of executions matching a visibility `query` (server-side filtering).
    pub async fn list_page(
        &self,
        query: String,
        page_size: usize,
        page_token: Vec<u8>,
    ) -> Result<ExecutionPage, EngineError> {
        let request = ListWorkflowExecutionsRequest {
            namespace: self.ns(),
            page_size: page_size.clamp(1, 1000) as i32,
            next_page_token: page_token,
            query,
        };
        let mut svc = self.conn().await?.workflow_service();
        let resp = read_rpc!(svc, list_workflow_executions, request)
            .map_err(|s| {
                EngineError::from_status(
                    "ListWorkflowExecutions",
                    s,
                    "",
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?
            .into_inner();
        Ok(ExecutionPage {
            executions: resp.executions.into_iter().map(execution_of).collect(),
            next_page_token: resp.next_page_token,
        })
    }

    /// How many executions match a visibility `query`.
    pub async fn count(&self, query: String) -> Result<i64, EngineError> {
        let request = CountWorkflowExecutionsRequest {
            namespace: self.ns(),
            query,
        };
        let mut svc = self.conn().await?.workflow_service();
        let resp = read_rpc!(svc, count_workflow_executions, request).map_err(|s| {
            EngineError::from_status(
                "CountWorkflowExecutions",
                s,
                "",
                &self.config.target(),
                &self.config.namespace,
            )
        })?;
        Ok(resp.into_inner().count)
    }

    /// The namespace's custom search attributes: name -> `IndexedValueType` value.
    pub async fn search_attributes(&self) -> Result<HashMap<String, i32>, EngineError> {
        let request = ListSearchAttributesRequest {
            namespace: self.ns(),
        };
        let mut svc = self.conn().await?.operator_service();
        let resp = read_rpc!(svc, list_search_attributes, request).map_err(|s| {
            EngineError::from_status(
                "ListSearchAttributes",
                s,
                "",
                &self.config.target(),
                &self.config.namespace,
            )
        })?;
        Ok(resp.into_inner().custom_attributes)
    }

    /// Register custom search attributes (name -> `IndexedValueType` value) on the namespace.
    pub async fn add_search_attributes(
        &self,
        attributes: HashMap<String, i32>,
    ) -> Result<(), EngineError> {
        let request = AddSearchAttributesRequest {
            search_attributes: attributes,
            namespace: self.ns(),
        };
        let mut svc = self.conn().await?.operator_service();
        svc.add_search_attributes(tonic::Request::new(request))
            .await
            .map_err(|s| {
                EngineError::from_status(
                    "AddSearchAttributes",
                    s,
                    "",
                    &self.config.target(),
                    &self.config.namespace,
                )
            })?;
        Ok(())
    }
}

pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
