output "bucket" {
  description = "The bucket of job manifests, inputs and outputs."
  value       = aws_s3_bucket.dub.bucket
}

output "bucket_arn" {
  value = aws_s3_bucket.dub.arn
}

output "jobs_uri" {
  description = "Drop job manifests here (one of job_suffixes) to start a dub-film/gpu run."
  value       = "s3://${aws_s3_bucket.dub.bucket}/${var.jobs_prefix}"
}

output "inputs_uri" {
  value = "s3://${aws_s3_bucket.dub.bucket}/${var.inputs_prefix}"
}

output "outputs_uri" {
  value = "s3://${aws_s3_bucket.dub.bucket}/${var.outputs_prefix}"
}

output "jobs_queue_url" {
  description = "The SQS queue of job notifications (also usable by `python -m infra.bridge.bridge --queue-url` instead of the Lambda)."
  value       = aws_sqs_queue.jobs.id
}

output "jobs_queue_arn" {
  value = aws_sqs_queue.jobs.arn
}

output "jobs_dlq_url" {
  description = "Dead-letter queue: notifications the bridge failed on max_receive_count times."
  value       = aws_sqs_queue.jobs_dlq.id
}

output "bridge_function_name" {
  description = "The bridge Lambda (null when create_bridge_lambda is false)."
  value       = one(aws_lambda_function.bridge[*].function_name)
}

output "bridge_log_group" {
  value = one(aws_cloudwatch_log_group.bridge[*].name)
}

output "bridge_consumer_policy_arn" {
  description = "With create_bridge_lambda = false: the policy for the role of the SQS consumer (python -m infra.bridge.bridge)."
  value       = one(aws_iam_policy.bridge_consumer[*].arn)
}

output "worker_policy_arn" {
  description = "IAM policy for the GPU workers' role: read jobs and inputs, write outputs."
  value       = aws_iam_policy.workers.arn
}
