# S3-triggered dub-film runs on AWS:
#
#   s3://BUCKET/jobs/*.yaml  --ObjectCreated-->  SQS queue (+ dead-letter queue)
#        --event source mapping-->  bridge Lambda (infra/bridge/bridge.py, bridge.tf)
#        --POST /events-->  Prefect: event s3.object.created  -->  trigger of dub-film/gpu
#
# plus an IAM policy that lets the GPU workers read the jobs and inputs and write the
# outputs under their prefixes.  See infra/README.md ("S3-triggered runs").

terraform {
  required_version = ">= 1.5"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.5, < 3.0" # 2.5: glob patterns in archive_file excludes
    }
  }
}

provider "aws" {
  region = var.aws_region

  default_tags {
    tags = merge({ "project" = "dub-film" }, var.tags)
  }
}

data "aws_caller_identity" "current" {}

locals {
  account_id  = data.aws_caller_identity.current.account_id
  bucket_name = coalesce(var.bucket_name, "${var.name}-${local.account_id}-${var.aws_region}")
}

# --------------------------------------------------------------------------- bucket

resource "aws_s3_bucket" "dub" {
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
}

# The bridge's idempotency is per object version (its Prefect event id is derived from
# bucket, key and versionId): a re-upload of a manifest is a new version, so a new run;
# a repeated notification of one version is not.
resource "aws_s3_bucket_versioning" "dub" {
  bucket = aws_s3_bucket.dub.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "dub" {
  bucket = aws_s3_bucket.dub.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "dub" {
  bucket = aws_s3_bucket.dub.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "dub" {
  bucket = aws_s3_bucket.dub.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "dub" {
  bucket = aws_s3_bucket.dub.id

  # Versioning keeps every overwritten or deleted object; old versions go after a while.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.dub]
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.dub.arn,
      "${aws_s3_bucket.dub.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "dub" {
  bucket = aws_s3_bucket.dub.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.dub]
}

# --------------------------------------------------------------------------- queue

resource "aws_sqs_queue" "jobs_dlq" {
  name                      = "${var.name}-jobs-dlq"
  message_retention_seconds = 1209600 # 14 days, the maximum: time to look at what failed
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "jobs" {
  name = "${var.name}-jobs"
  # AWS's advice for a Lambda event source: at least 6 times the function's timeout.
  visibility_timeout_seconds = 6 * var.bridge_timeout_s
  message_retention_seconds  = 345600 # 4 days
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  # A message the bridge could not handle max_receive_count times (Prefect unreachable,
  # malformed notification) moves to the dead-letter queue.
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.jobs_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "jobs_dlq" {
  queue_url = aws_sqs_queue.jobs_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.jobs.arn]
  })
}

# Only this bucket (in this account) may send to the queue.
data "aws_iam_policy_document" "jobs_queue" {
  statement {
    sid       = "AllowS3Notifications"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.jobs.arn]

    principals {
      type        = "Service"
      identifiers = ["s3.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_s3_bucket.dub.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sqs_queue_policy" "jobs" {
  queue_url = aws_sqs_queue.jobs.id
  policy    = data.aws_iam_policy_document.jobs_queue.json
}

# One queue configuration per manifest suffix (S3 filters take one prefix and one suffix
# each; the suffixes cannot overlap, so the configurations do not either).  S3 compares
# suffixes case-sensitively: "film.YAML" sends nothing.
resource "aws_s3_bucket_notification" "jobs" {
  bucket = aws_s3_bucket.dub.id

  dynamic "queue" {
    for_each = var.job_suffixes
    content {
      id            = "dub-film-jobs${replace(queue.value, ".", "-")}"
      queue_arn     = aws_sqs_queue.jobs.arn
      events        = ["s3:ObjectCreated:*"]
      filter_prefix = var.jobs_prefix
      filter_suffix = queue.value
    }
  }

  depends_on = [aws_sqs_queue_policy.jobs]
}

# --------------------------------------------------------------------------- GPU workers

# For the role of the GPU workers (instance profile, ECS task role, EKS IRSA / pod identity):
# read job manifests and inputs, write outputs, nothing else in the bucket.
data "aws_iam_policy_document" "workers" {
  statement {
    sid       = "ListJobsInputsOutputs"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [aws_s3_bucket.dub.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.jobs_prefix}*", "${var.inputs_prefix}*", "${var.outputs_prefix}*"]
    }
  }

  statement {
    sid       = "BucketLocation"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [aws_s3_bucket.dub.arn]
  }

  statement {
    sid     = "ReadJobsAndInputs"
    effect  = "Allow"
    actions = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = [
      "${aws_s3_bucket.dub.arn}/${var.jobs_prefix}*",
      "${aws_s3_bucket.dub.arn}/${var.inputs_prefix}*",
    ]
  }

  statement {
    sid    = "ReadWriteOutputs"
    effect = "Allow"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.dub.arn}/${var.outputs_prefix}*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_policy" "workers" {
  name        = "${var.name}-gpu-workers"
  description = "dub-film GPU workers: read s3://${local.bucket_name}/${var.jobs_prefix} and ${var.inputs_prefix}, write ${var.outputs_prefix}"
  policy      = data.aws_iam_policy_document.workers.json
}

resource "aws_iam_role_policy_attachment" "workers" {
  for_each = toset(var.worker_role_names)

  role       = each.value
  policy_arn = aws_iam_policy.workers.arn
}
