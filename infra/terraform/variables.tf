variable "aws_region" {
  description = "AWS region of the bucket, the queues and the bridge."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix of every resource name (queues, function, role, policy)."
  type        = string
  default     = "dub-film"
}

variable "tags" {
  description = "Tags added to every resource (besides project = dub-film)."
  type        = map(string)
  default     = {}
}

# --------------------------------------------------------------------------- bucket

variable "bucket_name" {
  description = "Bucket for job manifests, inputs and outputs. Default: NAME-ACCOUNT_ID-REGION."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects (and all their versions)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for the bucket's default encryption (SSE-KMS). Default: null, SSE-S3 (AES256)."
  type        = string
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Days an overwritten or deleted object version is kept before it expires."
  type        = number
  default     = 30
}

variable "jobs_prefix" {
  description = "Where job manifests are dropped: an upload under this prefix starts a run. Passed to the bridge as DUB_BRIDGE_PREFIX; must end with '/' and not start with one (the bridge normalises it so, and S3 must filter on the same string)."
  type        = string
  default     = "jobs/"

  validation {
    condition     = can(regex("^[^/].*/$", var.jobs_prefix))
    error_message = "jobs_prefix must end with '/' and must not start with '/', e.g. \"jobs/\"."
  }
}

variable "job_suffixes" {
  description = "Manifest file endings that start a run: one S3 notification filter each, and the bridge's DUB_BRIDGE_SUFFIXES. Default: the bridge's own default (infra/bridge/keys.py DEFAULT_SUFFIXES). Lower case: S3 filters are case-sensitive."
  type        = list(string)
  default     = [".yaml", ".yml", ".json"]

  validation {
    condition     = length(var.job_suffixes) > 0 && alltrue([for s in var.job_suffixes : can(regex("^\\.[a-z0-9]+$", s))])
    error_message = "job_suffixes must be a non-empty list of lower-case endings such as \".yaml\"."
  }
}

variable "inputs_prefix" {
  description = "Prefix of the films and dub stems the GPU workers may read."
  type        = string
  default     = "inputs/"
}

variable "outputs_prefix" {
  description = "Prefix the GPU workers may write their outputs under."
  type        = string
  default     = "outputs/"
}

variable "worker_role_names" {
  description = "IAM roles of the GPU workers (instance profile role, ECS task role, EKS service-account role) to attach the worker policy to. Empty: the policy is only created (see the output worker_policy_arn)."
  type        = list(string)
  default     = []
}

# --------------------------------------------------------------------------- queue

variable "max_receive_count" {
  description = "Deliveries of a notification before it moves to the dead-letter queue."
  type        = number
  default     = 5
}

# --------------------------------------------------------------------------- bridge

variable "create_bridge_lambda" {
  description = "Run the bridge as an AWS Lambda on the jobs queue. false: no function; run `python -m infra.bridge.bridge --queue-url QUEUE_URL` where Prefect is reachable, with the policy of the output bridge_consumer_policy_arn."
  type        = bool
  default     = true
}

variable "prefect_api_url" {
  description = "PREFECT_API_URL of the bridge Lambda: Prefect Cloud's https://api.prefect.cloud/api/accounts/ID/workspaces/ID, or a self-hosted server's https://HOST/api reachable from Lambda. Required when create_bridge_lambda is true."
  type        = string
  default     = null

  validation {
    condition     = var.prefect_api_url == null || can(regex("^https?://", var.prefect_api_url))
    error_message = "prefect_api_url must be an http(s) URL: a server's https://HOST/api or a Prefect Cloud workspace URL."
  }
}

variable "prefect_api_key" {
  description = "PREFECT_API_KEY of the bridge (Prefect Cloud). Prefer prefect_api_key_secret_id; null for a server without an API key."
  type        = string
  default     = null
  sensitive   = true
}

variable "prefect_api_key_secret_id" {
  description = "Secrets Manager secret (name or ARN) whose string value is the Prefect API key; read at apply time into the bridge's PREFECT_API_KEY. Overrides prefect_api_key."
  type        = string
  default     = null
}

variable "prefect_api_auth_string" {
  description = "PREFECT_API_AUTH_STRING (user:password) of a self-hosted Prefect server with basic auth; null otherwise."
  type        = string
  default     = null
  sensitive   = true
}

variable "bridge_source_dir" {
  description = "Folder zipped as the bridge's Lambda package (bridge.py, keys.py). Default: infra/bridge of this repository."
  type        = string
  default     = null
}

variable "bridge_timeout_s" {
  description = "Timeout of the bridge function, seconds; the queue's visibility timeout is 6 times this."
  type        = number
  default     = 60

  validation {
    condition     = var.bridge_timeout_s >= 10 && var.bridge_timeout_s <= 900
    error_message = "bridge_timeout_s must be between 10 and 900."
  }
}

variable "bridge_batch_size" {
  description = "SQS messages per bridge invocation."
  type        = number
  default     = 10
}

variable "bridge_max_concurrency" {
  description = "Concurrent bridge invocations the SQS event source may start (2 to 1000)."
  type        = number
  default     = 2
}

variable "bridge_log_level" {
  description = "DUB_BRIDGE_LOG_LEVEL of the bridge."
  type        = string
  default     = "INFO"
}

variable "bridge_log_retention_days" {
  description = "Retention of the bridge's CloudWatch log group, days."
  type        = number
  default     = 30
}
