# The bridge: an AWS Lambda running infra/bridge/bridge.py (handler bridge.lambda_handler),
# fed by the jobs queue.  For each S3 notification it emits the Prefect event
# s3.object.created (event id derived from the object version), which the trigger of the
# dub-film/gpu deployment turns into a flow run with manifest = s3://BUCKET/KEY.
# bridge.py and keys.py import only the standard library (boto3 only in the separate SQS
# consumer), so the folder is zipped as it is, with nothing to vendor.
#
# create_bridge_lambda = false: no function; the same code runs as a long-lived SQS
# consumer (python -m infra.bridge.bridge --queue-url ...) wherever Prefect is reachable,
# under a role with the policy bridge_consumer below.

locals {
  bridge_count      = var.create_bridge_lambda ? 1 : 0
  bridge_source_dir = coalesce(var.bridge_source_dir, "${path.module}/../bridge")

  # Credentials only when set: PREFECT_API_KEY for Prefect Cloud (from the variable or from
  # Secrets Manager), PREFECT_API_AUTH_STRING for a self-hosted server with basic auth, or
  # neither for an open server.  Either value ends up in the Terraform state.
  prefect_api_key = var.prefect_api_key_secret_id != null ? one(data.aws_secretsmanager_secret_version.prefect_api_key[*].secret_string) : var.prefect_api_key

  bridge_environment = merge(
    {
      PREFECT_API_URL      = coalesce(var.prefect_api_url, "unset")
      DUB_BRIDGE_BUCKET    = aws_s3_bucket.dub.bucket
      DUB_BRIDGE_PREFIX    = var.jobs_prefix
      DUB_BRIDGE_SUFFIXES  = join(",", var.job_suffixes)
      DUB_BRIDGE_LOG_LEVEL = var.bridge_log_level
    },
    local.prefect_api_key == null ? {} : { PREFECT_API_KEY = local.prefect_api_key },
    var.prefect_api_auth_string == null ? {} : { PREFECT_API_AUTH_STRING = var.prefect_api_auth_string },
  )
}

data "aws_secretsmanager_secret_version" "prefect_api_key" {
  count     = var.create_bridge_lambda && var.prefect_api_key_secret_id != null ? 1 : 0
  secret_id = var.prefect_api_key_secret_id
}

data "archive_file" "bridge" {
  count = local.bridge_count

  type        = "zip"
  source_dir  = local.bridge_source_dir
  output_path = "${path.module}/.terraform/build/dub-film-bridge.zip"
  excludes = [
    "__pycache__",
    "**/__pycache__/**",
    "**/*.pyc",
    "README.md",
    "tests",
    "tests/**",
  ]
}

# --------------------------------------------------------------------------- IAM

# What consuming the jobs queue takes, for the Lambda's role or the consumer's.
data "aws_iam_policy_document" "consume_jobs" {
  statement {
    sid    = "ConsumeJobsQueue"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
    ]
    resources = [aws_sqs_queue.jobs.arn]
  }
}

data "aws_iam_policy_document" "bridge_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "bridge" {
  count = local.bridge_count

  name               = "${var.name}-bridge"
  assume_role_policy = data.aws_iam_policy_document.bridge_assume.json
}

# Least privilege: consume the jobs queue and write its own log group.  The bridge never
# reads the bucket (the notification carries bucket, key, version and ETag).
data "aws_iam_policy_document" "bridge" {
  count = local.bridge_count

  source_policy_documents = [data.aws_iam_policy_document.consume_jobs.json]

  statement {
    sid       = "WriteLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.bridge[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "bridge" {
  count = local.bridge_count

  name   = "${var.name}-bridge"
  role   = aws_iam_role.bridge[0].id
  policy = data.aws_iam_policy_document.bridge[0].json
}

resource "aws_iam_policy" "bridge_consumer" {
  count = var.create_bridge_lambda ? 0 : 1

  name        = "${var.name}-bridge-consumer"
  description = "dub-film bridge as an SQS consumer (python -m infra.bridge.bridge): consume the jobs queue"
  policy      = data.aws_iam_policy_document.consume_jobs.json
}

# --------------------------------------------------------------------------- function

resource "aws_cloudwatch_log_group" "bridge" {
  count = local.bridge_count

  name              = "/aws/lambda/${var.name}-bridge"
  retention_in_days = var.bridge_log_retention_days
}

resource "aws_lambda_function" "bridge" {
  count = local.bridge_count

  function_name    = "${var.name}-bridge"
  description      = "dub-film: S3 job manifest notifications (SQS) -> Prefect event s3.object.created"
  role             = aws_iam_role.bridge[0].arn
  runtime          = "python3.11"
  handler          = "bridge.lambda_handler"
  filename         = data.archive_file.bridge[0].output_path
  source_code_hash = data.archive_file.bridge[0].output_base64sha256
  timeout          = var.bridge_timeout_s
  memory_size      = 256

  environment {
    variables = local.bridge_environment
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.bridge[0].name
  }

  lifecycle {
    precondition {
      condition     = var.prefect_api_url != null
      error_message = "prefect_api_url is required for the bridge Lambda (or set create_bridge_lambda = false)."
    }
  }

  depends_on = [aws_iam_role_policy.bridge]
}

resource "aws_lambda_event_source_mapping" "bridge" {
  count = local.bridge_count

  event_source_arn = aws_sqs_queue.jobs.arn
  function_name    = aws_lambda_function.bridge[0].arn
  batch_size       = var.bridge_batch_size
  enabled          = true

  # The handler returns {"batchItemFailures": [...]}: only the failed messages are retried
  # (and, after max_receive_count deliveries, moved to the dead-letter queue).
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.bridge_max_concurrency
  }
}
